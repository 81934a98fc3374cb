#!/usr/bin/env bash
# Load benchmark of the wechat-oauth-proxy sidecar against nginx and the bare upstream, on loopback.
#
# Run by hand from a clean clone (it is not part of `cargo test`):
#
#     bench/load.sh                       # 10 s per row, 32 connections, 1 wrk thread
#     DURATION=30 CONNECTIONS=64 bench/load.sh
#     ROWS="a b c" bench/load.sh          # a subset of the rows (or: bench/load.sh a b c)
#     ROWS=peers bench/load.sh            # the peers table: rows a b c y q o t f (see below)
#
# Installs what the chosen rows need with apt-get when it is missing (nginx, wrk, curl; caddy for
# (y); apache2 for (q) and (o), with libapache2-mod-auth-openidc, openssl and python3 (standard
# library only) for (o)), builds the release binary,
# and starts on 127.0.0.1 (ports 18080-18093, override with PORT_BASE):
#   - the fast upstream: one nginx worker answering `return 200` (the same for every row);
#   - (b) nginx as a plain reverse proxy to it (one worker, keepalive upstream pool);
#   - (c) the sidecar with a warm session: bench/config.toml, one login through the in-process
#         simulated WeChat gives the session cookie, every request then hits the JWT cache;
#   - (d) a second sidecar that re-mints the JWT on every request ([jwt] cache = false);
# and measures, closed loop with wrk (fixed connections, threads and duration, after a warm-up):
#   (a) upstream direct, (b) nginx, (c) sidecar + session, (d) sidecar + re-mint every request,
#   (e) sidecar, no session, browser navigation (302 into the login flow), and for attribution
#   (p) the sidecar's accept loop + upstream client without the auth layer
#   (examples/bench_bare_proxy.rs); (f) nginx with the shipped forward-auth config
#   (deploy/nginx/forward-auth.conf: auth_request to sidecar (c), same session cookie) in front of
#   the same upstream, where CPU/req is the sidecar's CPU for one auth answer (compare with (c)); (k) and (m) the sidecar with 1 k and 1 M sessions prefilled
#   (dev.prefill_sessions), wrk cycling through 1 024 users' cookies (a Lua script), whose ratio
#   is the "throughput at 1 M sessions vs 1 k" target; and the peers (issue 15), each in front of
#   the same upstream with access logs off, keep-alive on and its packaged default worker counts:
#   (y) Caddy's `reverse_proxy` (bench/Caddyfile); (o) Apache httpd + mod_auth_openidc with a
#   logged-in OpenID Connect session (bench/apache-oidc.conf: an own apache2 instance with its own
#   config, port and pid file under the work directory, never the system service), whose provider
#   is bench/fake_op.py over HTTPS with a throw-away self-signed certificate: the script logs in
#   once with curl (following the redirects, keeping the cookie jar), checks that a request without
#   the cookie is redirected to the provider and one with it reaches the upstream, then wrk sends
#   the mod_auth_openidc session cookie on every request; (t) nginx with the same forward-auth
#   config as (f) but a trivial auth endpoint (a second nginx answering `return 204`), the
#   baseline of the forward-auth target (f) >= 0.9x (t); and, for attribution, (q) the same Apache
#   without mod_auth_openidc (module not loaded). For (f) and (t), CPU/req is the auth endpoint's
#   (sidecar / 204 nginx); for (o) and (q) it is all of Apache's processes.
#   Then the rows in LATENCY_ROWS (default a b c f y o t, those also in ROWS) with ONE connection,
#   where p50/p99 are what the proxy adds rather than time spent queueing behind other requests.
# Every row sends the same request (same path, same headers, same session cookie) except (e),
# which has no cookie, and (k)/(m), which cycle through their prefilled users' cookies. Then it reports the sidecar's RSS at 0 sessions (measured on the running
# sidecar) and at 100 k and 1 M sessions (the measured RSS at 0 plus the per-session RSS of the
# same in-process store filled with 100 k / 1 M sessions: examples/bench_session_rss.rs).
#
# With `taskset` and at least 2 CPUs, wrk runs on the last CPU and every server on the others.
# Prints a table with ratios against (b) and (a) and the CPU time per request of each process;
# exits non-zero if any row could not be measured.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/sim_login.sh
. "$ROOT/bench/sim_login.sh"

DURATION=${DURATION:-10}          # seconds per measured row
WARMUP=${WARMUP:-3}               # seconds of unmeasured load before each row
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
ALL_ROWS="a b p c d e f k m y q o t"
PEER_ROWS="a b c y q o t f"
if [ $# -gt 0 ]; then ROWS="$*"; fi   # rows as arguments: bench/load.sh a b c
ROWS=${ROWS:-$ALL_ROWS}
ROWS=${ROWS//peers/$PEER_ROWS}
ROWS=${ROWS//all/$ALL_ROWS}
for row in $ROWS; do
  [[ " $ALL_ROWS " == *" $row "* ]] || { echo "[load.sh] error: unknown row $row (rows: $ALL_ROWS, or peers, all)" >&2; exit 2; }
done
ROWS=$(tr ' ' '\n' <<<"$ROWS" | awk 'NF && !seen[$0]++' | tr '\n' ' ')
PREFILL_K=${PREFILL_K:-1024}        # sessions in the store for row (k) (1 024 users: like (m))
PREFILL_M=${PREFILL_M:-1000000}     # sessions in the store for row (m)
ROUNDS=${ROUNDS:-3}               # every row is measured this often (interleaved); medians reported
PORT_BASE=${PORT_BASE:-18080}
RSS_SIZES=${RSS_SIZES-"100000 1000000"}
KEEP=${KEEP:-0}                   # 1: keep the work directory (logs, configs)
LATENCY_ROWS=${LATENCY_ROWS-"a b c f y o t"}  # rows also measured with ONE connection (no queueing)
LATENCY_DURATION=${LATENCY_DURATION:-10}

PORT_PROXY=$PORT_BASE
PORT_UP=$((PORT_BASE + 1))
PORT_NGINX=$((PORT_BASE + 2))
PORT_REMINT=$((PORT_BASE + 3))
PORT_BARE=$((PORT_BASE + 4))
PORT_K=$((PORT_BASE + 5))
PORT_M=$((PORT_BASE + 6))
PORT_FA=$((PORT_BASE + 7))
PORT_CADDY=$((PORT_BASE + 8))
PORT_APACHE=$((PORT_BASE + 9))
PORT_OP=$((PORT_BASE + 10))
PORT_TRIVIAL=$((PORT_BASE + 11))
PORT_204=$((PORT_BASE + 12))
PORT_APACHE_PLAIN=$((PORT_BASE + 13))
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
PATH_UNDER_TEST="/app/page?id=42"

log() { echo "[load.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }
wants() { [[ " $ROWS " == *" $1 "* ]]; }

# --- tools --------------------------------------------------------------------------------------
install_missing() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  if wants y; then command -v caddy >/dev/null 2>&1 || missing+=(caddy); fi
  if wants o || wants q; then [ -x /usr/sbin/apache2 ] || missing+=(apache2); fi
  if wants o; then
    [ -f /usr/lib/apache2/modules/mod_auth_openidc.so ] || missing+=(libapache2-mod-auth-openidc)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} with apt-get"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}
install_missing
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v cargo >/dev/null 2>&1 || die "cargo not found (install Rust: https://rustup.rs)"

for port in $PORT_PROXY $PORT_UP $PORT_NGINX $PORT_REMINT $PORT_BARE $PORT_K $PORT_M $PORT_FA \
  $PORT_CADDY $PORT_APACHE $PORT_OP $PORT_TRIVIAL $PORT_204 $PORT_APACHE_PLAIN; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is in use; set PORT_BASE to a free range"
  fi
done

log "building the release binary and the RSS probe"
cargo build --release --quiet --bin wechat-oauth-proxy --example bench_session_rss --example bench_bare_proxy
BIN=$ROOT/target/release/wechat-oauth-proxy
RSS_PROBE=$ROOT/target/release/examples/bench_session_rss
BARE=$ROOT/target/release/examples/bench_bare_proxy

# --- CPU pinning --------------------------------------------------------------------------------
NCPU=$(nproc)
PIN_SERVER=()
PIN_LOAD=()
if command -v taskset >/dev/null 2>&1 && [ "$NCPU" -ge 2 ]; then
  PIN_LOAD=(taskset -c $((NCPU - 1)))
  PIN_SERVER=(taskset -c "0-$((NCPU - 2))")
  PINNING="wrk on CPU $((NCPU - 1)), servers on CPU 0-$((NCPU - 2))"
else
  PINNING="none (taskset missing or a single CPU)"
fi

# --- processes ----------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/wxauth-load.XXXXXX)
PIDS=()
cleanup() {
  local pid left
  # Apache's children too, in case its parent has to be killed hard below.
  local children=() pidfile
  for pidfile in "$WORK"/apache*/httpd.pid; do
    [ -s "$pidfile" ] || continue
    mapfile -t children < <(pgrep -P "$(cat "$pidfile")" || true)
    PIDS+=("${children[@]}")
  done
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  # Bounded: 10 s for everything to stop, then SIGKILL.
  for _ in $(seq 1 100); do
    left=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && left=1; done
    [ "$left" = 1 ] || break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && { log "process $pid did not stop; killing it"; kill -9 "$pid" 2>/dev/null || true; }
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "$KEEP" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_http() { # url [expected status [curl args...]] (10 s at most)
  local url=$1 want=${2:-200}
  shift $(($# < 2 ? $# : 2))
  for _ in $(seq 1 100); do
    if [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$@" "$url" || true)" = "$want" ]; then return 0; fi
    sleep 0.1
  done
  return 1
}

nginx_conf() { # dir port body-of-server-block [extra-http-block] (no port: no server block)
  mkdir -p "$1/logs" "$1/tmp"
  local server=""
  [ -z "$2" ] || server="server { listen 127.0.0.1:$2 backlog=4096; $3 }"
  cat >"$1/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path $1/tmp;
  proxy_temp_path $1/tmp;
  fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp;
  scgi_temp_path $1/tmp;
  ${4:-}
  $server
}
EOF
}

start_nginx() { # dir
  "${PIN_SERVER[@]}" "$NGINX" -p "$1" -c "$1/nginx.conf" >"$1/logs/stdout.log" 2>&1 &
  PIDS+=($!)
}
nginx_workers() { pgrep -P "$(cat "$1/nginx.pid")" | tr '\n' ' '; }

# The fast upstream: a static 200. /_check echoes the JWT header it received (sanity checks only).
# shellcheck disable=SC2016 # nginx variables, not shell ones
nginx_conf "$WORK/upstream" "$PORT_UP" '
    location = /_check { default_type text/plain; return 200 "$http_x_wechat_jwt"; }
    location / { default_type text/plain; return 200 "hello from the bench upstream\n"; }'
start_nginx "$WORK/upstream"

# (b) nginx as a plain reverse proxy with a keepalive pool to the upstream.
# shellcheck disable=SC2016 # nginx variables, not shell ones
nginx_conf "$WORK/nginx-proxy" "$PORT_NGINX" '
    location / {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }' "upstream bench_upstream { server 127.0.0.1:$PORT_UP; keepalive 64; }"
start_nginx "$WORK/nginx-proxy"

SIDECAR_PID=""
start_sidecar() { # name port extra-jwt-line [extra-dev-line]
  local dir=$WORK/$1
  mkdir -p "$dir"
  sed "s/@UPSTREAM_PORT@/$PORT_UP/" "$ROOT/bench/config.toml" >"$dir/config.toml"
  if [ -n "$3" ]; then
    sed -i "s/^\[jwt\]$/[jwt]\n$3/" "$dir/config.toml"
  fi
  if [ -n "${4:-}" ]; then
    sed -i "s/^\[dev\]$/[dev]\n$4/" "$dir/config.toml"
  fi
  if ! "$BIN" --config "$dir/config.toml" --check >"$dir/check.log" 2>&1; then
    log "$1: configuration refused: $(tr '\n' ' ' <"$dir/check.log")"
    return 1
  fi
  RUST_LOG=${RUST_LOG:-warn} "${PIN_SERVER[@]}" "$BIN" --config "$dir/config.toml" \
    --listen "127.0.0.1:$2" --public-url "http://127.0.0.1:$2" --state-dir "$dir/state" \
    >"$dir/sidecar.log" 2>&1 &
  SIDECAR_PID=$!
  PIDS+=("$SIDECAR_PID")
  # Ready = the simulator pushed a ticket and the component token was fetched.
  wait_http "http://127.0.0.1:$2/_wxauth/ready" || { log "$1 not ready: $(tail -5 "$dir/sidecar.log")"; return 1; }
}

login() { sim_login "$1" "$WORK/jar.$1"; }  # port: prints the session cookie (bench/sim_login.sh)

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# CPU time (user + system, in clock ticks) of processes and all their threads.
cpu_ticks() {
  local total=0 pid task
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*/stat; do
      [ -r "$task" ] || continue
      total=$((total + $(awk '{ print $14 + $15 }' "$task")))
    done
  done
  echo "$total"
}
# The user-space part of cpu_ticks (clock ticks): the rest is the kernel's (loopback TCP, epoll).
user_ticks() {
  local total=0 pid task
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*/stat; do
      [ -r "$task" ] || continue
      total=$((total + $(awk '{ print $14 }' "$task")))
    done
  done
  echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

wait_http "http://127.0.0.1:$PORT_UP/" || die "the upstream nginx did not start: $(cat "$WORK/upstream/logs/error.log")"
wait_http "http://127.0.0.1:$PORT_NGINX/" || die "the proxy nginx did not start: $(cat "$WORK/nginx-proxy/logs/error.log")"

declare -A RPS P50 P99 NOTE CPU_PROXY CPU_UP PROC L_RPS L_P50 L_P99 L_CPU L_UP L_USR
MEASURED=()
FAILED=()
fail_row() { FAILED+=("$1"); NOTE[$1]="NOT MEASURED: $2"; log "row $1 not measured: $2"; }
row_failed() { [[ " ${FAILED[*]} " == *" $1 "* ]]; }

COOKIE=""
SIDECAR_C=""
RSS0=""
if start_sidecar sidecar "$PORT_PROXY" ""; then
  SIDECAR_C=$SIDECAR_PID
  RSS0=$(rss_kib "$SIDECAR_C")
  COOKIE=$(login "$PORT_PROXY" || true)
  [ -n "$COOKIE" ] || log "login through the simulated WeChat failed: $(tail -5 "$WORK/sidecar/sidecar.log")"
fi
# A stand-in cookie of the same shape for the rows that do not need a real one.
REQUEST_COOKIE=${COOKIE:-wxauth_session=$(head -c 50 /dev/urandom | base64 | tr -d '\n=' | head -c 68)}

REMINT_OK=0
if [[ " $ROWS " == *" d "* ]]; then
  if start_sidecar sidecar-remint "$PORT_REMINT" "cache = false"; then
    PROC[d]=$SIDECAR_PID
    REMINT_COOKIE=$(login "$PORT_REMINT" || true)
    [ -n "$REMINT_COOKIE" ] && REMINT_OK=1
  fi
fi

# (k) and (m): the same sidecar with its store prefilled (dev.prefill_sessions) with 1 k and 1 M
# sessions; wrk cycles through 1 024 of their cookies (a Lua script), so lookups spread over the
# store instead of hitting one hot entry. (m) vs (k) is the "1 M sessions vs 1 k" throughput.
declare -A CYCLE_OK CYCLE_URL RSS_FULL
for row in k m; do
  [[ " $ROWS " == *" $row "* ]] || continue
  if [ "$row" = k ]; then n=$PREFILL_K port=$PORT_K; else n=$PREFILL_M port=$PORT_M; fi
  log "starting sidecar ($row) with $n prefilled sessions"
  if start_sidecar "sidecar-$row" "$port" "" "prefill_sessions = $n"; then
    PROC[$row]=$SIDECAR_PID
    RSS_FULL[$row]=$(rss_kib "$SIDECAR_PID")
    cookies=$WORK/sidecar-$row/state/bench-cookies.txt
    if [ -s "$cookies" ]; then
      cat >"$WORK/cycle-$row.lua" <<LUA
local cookies = {}
for line in io.lines("$cookies") do
  if #line > 0 then cookies[#cookies + 1] = line end
end
local i = 0
request = function()
  i = i % #cookies + 1
  wrk.headers["Cookie"] = cookies[i]
  return wrk.format()
end
LUA
      CYCLE_OK[$row]=1
      CYCLE_URL[$row]=http://127.0.0.1:$port$PATH_UNDER_TEST
    fi
  fi
done

# (p) the sidecar's own accept loop and upstream client without the auth layer (attribution).
BARE_OK=0
if [[ " $ROWS " == *" p "* ]]; then
  RUST_LOG=${RUST_LOG:-warn} "${PIN_SERVER[@]}" "$BARE" "127.0.0.1:$PORT_BARE" "http://127.0.0.1:$PORT_UP" \
    >"$WORK/bare-proxy.log" 2>&1 &
  PROC[p]=$!
  PIDS+=("${PROC[p]}")
  wait_http "http://127.0.0.1:$PORT_BARE/" && BARE_OK=1
fi

# nginx running the shipped forward-auth config (deploy/nginx/forward-auth.conf) in front of the
# same upstream, asking the auth endpoint on auth-port on every request.
forward_auth_nginx() { # name auth-port listen-port
  mkdir -p "$WORK/$1"
  sed -e "s/server 127.0.0.1:8080;/server 127.0.0.1:$2;/" \
    -e "s/server 127.0.0.1:3000;/server 127.0.0.1:$PORT_UP;/" \
    -e "s/listen 80;/listen 127.0.0.1:$3 backlog=4096;/" \
    "$ROOT/deploy/nginx/forward-auth.conf" >"$WORK/$1/forward-auth.conf"
  nginx_conf "$WORK/$1" "" "" "include $WORK/$1/forward-auth.conf;"
  start_nginx "$WORK/$1"
}

# (f) the forward-auth nginx asking sidecar (c) (forward auth enabled in bench/config.toml).
FA_OK=0
if wants f; then
  forward_auth_nginx nginx-fa "$PORT_PROXY" "$PORT_FA"
  wait_http "http://127.0.0.1:$PORT_FA/_wxauth/health" && FA_OK=1
fi

# (t) the same forward-auth nginx asking a trivial auth endpoint: a second one-worker nginx whose
# every answer is `return 204` (allowed, no identity headers). (f) / (t) is the forward-auth target.
TRIVIAL_OK=0
if wants t; then
  nginx_conf "$WORK/auth-204" "$PORT_204" 'location / { return 204; }'
  start_nginx "$WORK/auth-204"
  forward_auth_nginx nginx-trivial "$PORT_204" "$PORT_TRIVIAL"
  wait_http "http://127.0.0.1:$PORT_204/" 204 && wait_http "http://127.0.0.1:$PORT_TRIVIAL/" 200 && TRIVIAL_OK=1
fi

# (y) Caddy's reverse_proxy (bench/Caddyfile): no admin endpoint, no automatic HTTPS, no access
# log, Caddy's own defaults otherwise (GOMAXPROCS = the CPUs it is pinned to). Its autosave and
# storage go to the work directory, not to ~/.config or ~/.local/share.
CADDY_OK=0
if wants y; then
  mkdir -p "$WORK/caddy"
  sed -e "s/@PORT@/$PORT_CADDY/g" -e "s/@UPSTREAM_PORT@/$PORT_UP/g" "$ROOT/bench/Caddyfile" >"$WORK/caddy/Caddyfile"
  HOME=$WORK/caddy XDG_CONFIG_HOME=$WORK/caddy XDG_DATA_HOME=$WORK/caddy "${PIN_SERVER[@]}" \
    caddy run --config "$WORK/caddy/Caddyfile" --adapter caddyfile >"$WORK/caddy/caddy.log" 2>&1 &
  PROC[y]=$!
  PIDS+=("${PROC[y]}")
  wait_http "http://127.0.0.1:$PORT_CADDY/" && CADDY_OK=1
fi

# (o) Apache httpd + mod_auth_openidc (bench/apache-oidc.conf), its own instance under the work
# directory, with the fake OpenID provider bench/fake_op.py (HTTPS, throw-away certificate, RS256
# id_tokens signed with a throw-away key).
APACHE_OK=0
APACHE_COOKIE=""
APACHE_DIR=$WORK/apache
AP=http://127.0.0.1:$PORT_APACHE$PATH_UNDER_TEST
apache_login() { # prints the mod_auth_openidc session cookie (name=value)
  local jar=$APACHE_DIR/jar out
  rm -f "$jar"
  # -k: the provider's certificate is self-signed. 302 to the provider, 302 back to the redirect
  # URI, 302 to the page, which the upstream answers.
  out=$(curl -sk -m 20 -L --max-redirs 5 -c "$jar" -b "$jar" -H 'Accept: text/html' \
    -o "$APACHE_DIR/login.body" -w '%{http_code} %{num_redirects}' "$AP") || out="curl failed"
  if [ "$out" != "200 3" ]; then
    log "Apache login: $out (expected 200 after 3 redirects); $(tail -3 "$APACHE_DIR/error.log" 2>/dev/null)"
    return 1
  fi
  awk '$6 == "mod_auth_openidc_session" { print $6 "=" $7 }' "$jar"
}
# The row measures an authenticated path: without the cookie, Apache sends the browser to the
# provider; with it, the request reaches the upstream.
apache_authenticated_path() { # cookie
  local out
  out=$(curl -s -m 10 -o /dev/null -w '%{http_code} %{redirect_url}' -H "$HDR_ACCEPT" -H "$HDR_UA" "$AP" || true)
  if [[ "$out" != "302 https://127.0.0.1:$PORT_OP/authorize?"* ]]; then
    log "Apache without the session cookie: '$out', expected a 302 to the provider"
    return 1
  fi
  out=$(curl -s -m 10 -w ' %{http_code}' -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $1" "$AP" || true)
  if [ "$out" != $'hello from the bench upstream\n 200' ]; then
    log "Apache with the session cookie: '$out', expected the upstream's 200"
    return 1
  fi
}
# An own apache2 instance from bench/apache-oidc.conf. With auth = 0, mod_auth_openidc is not
# loaded at all (no <Location /> block, no OIDC directives): Apache's reverse proxy alone, row (q).
start_apache() { # dir port auth(1|0) client-secret
  local dir=$1 user_group="" strip=()
  mkdir -p "$dir/run"
  # Run as root, httpd's children switch to www-data: they must reach their directory.
  if [ "$(id -u)" = 0 ]; then
    user_group='User www-data\nGroup www-data'
    chmod 711 "$WORK"
    chmod 755 "$dir" "$dir/run"
  fi
  [ "$3" = 1 ] || strip=(-e '/^<Location \/>$/,/^<\/Location>$/d' -e '/auth_openidc_module/d' -e '/^OIDC/d')
  sed -e "s#@DIR@#$dir#g" -e "s/@PORT@/$2/g" -e "s/@UPSTREAM_PORT@/$PORT_UP/g" \
    -e "s/@OP_PORT@/$PORT_OP/g" -e "s/@CLIENT_SECRET@/$4/" \
    -e "s/@PASSPHRASE@/$(head -c 24 /dev/urandom | base64 | tr -d '/+=')/" -e "s/@USER_GROUP@/$user_group/" \
    "${strip[@]}" "$ROOT/bench/apache-oidc.conf" >"$dir/httpd.conf"
  if ! /usr/sbin/apache2 -d "$dir" -f "$dir/httpd.conf" -t >"$dir/configtest.log" 2>&1; then
    log "apache2 refused its configuration: $(tr '\n' ' ' <"$dir/configtest.log")"
    return 1
  fi
  "${PIN_SERVER[@]}" /usr/sbin/apache2 -d "$dir" -f "$dir/httpd.conf" -DFOREGROUND >"$dir/stdout.log" 2>&1 &
  PIDS+=($!)
}
apache_processes() { # dir: the parent and its children (children may come and go between rows)
  local parent
  parent=$(cat "$1/httpd.pid" 2>/dev/null) || return 0
  echo "$parent $(pgrep -P "$parent" | tr '\n' ' ')"
}

if wants o; then
  mkdir -p "$APACHE_DIR"
  if openssl req -x509 -newkey rsa:2048 -nodes -keyout "$APACHE_DIR/op-tls.key" -out "$APACHE_DIR/op-tls.crt" \
    -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 >"$APACHE_DIR/openssl.log" 2>&1 &&
    openssl genrsa -out "$APACHE_DIR/op-sign.pem" 2048 >>"$APACHE_DIR/openssl.log" 2>&1; then
    client_secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    "${PIN_SERVER[@]}" python3 "$ROOT/bench/fake_op.py" --port "$PORT_OP" \
      --tls-cert "$APACHE_DIR/op-tls.crt" --tls-key "$APACHE_DIR/op-tls.key" \
      --signing-key "$APACHE_DIR/op-sign.pem" --client-id bench-client --client-secret "$client_secret" \
      >"$APACHE_DIR/fake-op.log" 2>&1 &
    PIDS+=($!)
    if ! wait_http "https://127.0.0.1:$PORT_OP/.well-known/openid-configuration" 200 -k; then
      log "the fake OpenID provider did not start: $(tail -3 "$APACHE_DIR/fake-op.log")"
    elif start_apache "$APACHE_DIR" "$PORT_APACHE" 1 "$client_secret"; then
      if wait_http "$AP" 302 -H 'Accept: text/html'; then
        APACHE_COOKIE=$(apache_login || true)
        [ -n "$APACHE_COOKIE" ] && APACHE_OK=1
      else
        log "Apache did not start: $(tail -3 "$APACHE_DIR/error.log" 2>/dev/null)"
      fi
    fi
  else
    log "openssl failed: $(tail -3 "$APACHE_DIR/openssl.log")"
  fi
fi
# (q) the same Apache without mod_auth_openidc (attribution: Apache's proxy vs its auth module).
APACHE_PLAIN_OK=0
AQ=http://127.0.0.1:$PORT_APACHE_PLAIN$PATH_UNDER_TEST
if wants q && start_apache "$WORK/apache-plain" "$PORT_APACHE_PLAIN" 0 ""; then
  wait_http "$AQ" && APACHE_PLAIN_OK=1
fi

UPSTREAM_WORKERS=$(nginx_workers "$WORK/upstream")
PROC[a]=$UPSTREAM_WORKERS
PROC[b]=$(nginx_workers "$WORK/nginx-proxy")
PROC[c]=$SIDECAR_C
PROC[e]=$SIDECAR_C
# (f): the sidecar's CPU per request is the cost of one auth answer; nginx's own is not counted.
PROC[f]=$SIDECAR_C
# (t): likewise the trivial auth endpoint's.
if wants t; then PROC[t]=$(nginx_workers "$WORK/auth-204"); fi
declare -A RSS_AFTER

# wrk run; fills RPS/P50/P99 for the row. Latencies are converted to microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "us") f = 1; else if (u == "ms") f = 1000; else if (u == "s") f = 1000000; else f = -1
    if (f < 0) print "NaN"; else printf "%.0f", n * f }'
}
run_row() { # row url [extra wrk args...]
  local row=$1 url=$2 out
  shift 2
  "${PIN_LOAD[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" >/dev/null 2>&1 || true
  local proxy_before up_before proxy_after up_after user_before user_after
  # shellcheck disable=SC2086 # PROC holds pid lists
  proxy_before=$(cpu_ticks ${PROC[$row]:-})
  # shellcheck disable=SC2086
  user_before=$(user_ticks ${PROC[$row]:-})
  # shellcheck disable=SC2086
  up_before=$(cpu_ticks $UPSTREAM_WORKERS)
  out=$("${PIN_LOAD[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" 2>&1) || {
    fail_row "$row" "wrk failed: $(tail -2 <<<"$out" | tr '\n' ' ')"
    return
  }
  # shellcheck disable=SC2086
  proxy_after=$(cpu_ticks ${PROC[$row]:-})
  # shellcheck disable=SC2086
  user_after=$(user_ticks ${PROC[$row]:-})
  # shellcheck disable=SC2086
  up_after=$(cpu_ticks $UPSTREAM_WORKERS)
  echo "$out" >>"$WORK/wrk-$row.txt"
  local rps p50 p99 bad errors total
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  bad=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' <<<"$out")
  errors=$(awk '/Socket errors:/ { print }' <<<"$out")
  if [ -z "$rps" ] || [ -z "$p50" ] || [ -z "$p99" ]; then
    fail_row "$row" "could not parse wrk output"
    return
  fi
  if [ -n "$bad" ] && [ "$bad" != 0 ]; then
    fail_row "$row" "$bad responses were not 2xx/3xx"
    return
  fi
  total=$(awk '/requests in/ { print $1 }' <<<"$out")
  if [ -n "$total" ] && [ "$total" -gt 0 ]; then
    L_CPU[$row]+=" $(((proxy_after - proxy_before) * TICK_US / total))"
    L_USR[$row]+=" $(awk -v u=$((user_after - user_before)) -v t=$((proxy_after - proxy_before)) \
      -v us="$TICK_US" -v n="$total" 'BEGIN { printf "%.1f/%.1f", u * us / n, (t - u) * us / n }')"
    [ "$row" = a ] || L_UP[$row]+=" $(((up_after - up_before) * TICK_US / total))"
  fi
  L_RPS[$row]+=" $rps"
  L_P50[$row]+=" $(to_us "$p50")"
  L_P99[$row]+=" $(to_us "$p99")"
  if [ -n "$errors" ]; then NOTE[$row]+="round $round: $errors; "; fi
  log "round $round, row $row: ${rps} req/s, p50 ${p50}, p99 ${p99}"
}

median() { # values...
  [ $# -gt 0 ] || return 0
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Sanity check before a row: the exact request gets the expected status (and, for the session
# rows, the upstream received a JWT).
expect_status() { # url expected [curl args...]
  local url=$1 want=$2 got
  shift 2
  got=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$@" "$url" || true)
  [ "$got" = "$want" ] || { log "$url answered $got, expected $want"; return 1; }
}
expect_jwt() { # base cookie
  local body
  body=$(curl -s -m 10 -H "Cookie: $2" "$1/_check" || true)
  [[ "$body" =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || { log "$1: no JWT reached the upstream"; return 1; }
}

HDR_ACCEPT="Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"
HDR_UA="User-Agent: Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36 MicroMessenger/8.0.47"
UP=http://127.0.0.1:$PORT_UP$PATH_UNDER_TEST
NG=http://127.0.0.1:$PORT_NGINX$PATH_UNDER_TEST
SC=http://127.0.0.1:$PORT_PROXY$PATH_UNDER_TEST
RM=http://127.0.0.1:$PORT_REMINT$PATH_UNDER_TEST
BP=http://127.0.0.1:$PORT_BARE$PATH_UNDER_TEST
FA=http://127.0.0.1:$PORT_FA$PATH_UNDER_TEST
CY=http://127.0.0.1:$PORT_CADDY$PATH_UNDER_TEST
TR=http://127.0.0.1:$PORT_TRIVIAL$PATH_UNDER_TEST

for round in $(seq 1 "$ROUNDS"); do
for row in $ROWS; do
  row_failed "$row" && continue
  case $row in
    a)
      if expect_status "$UP" 200; then
        run_row a "$UP" -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $REQUEST_COOKIE"
      else fail_row a "upstream does not answer 200"; fi ;;
    b)
      if expect_status "$NG" 200; then
        run_row b "$NG" -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $REQUEST_COOKIE"
      else fail_row b "nginx does not answer 200"; fi ;;
    c)
      if [ -z "$COOKIE" ]; then fail_row c "no session (sidecar start or login failed)"
      elif expect_status "$SC" 200 -H "Cookie: $COOKIE" -H "$HDR_ACCEPT" && expect_jwt "http://127.0.0.1:$PORT_PROXY" "$COOKIE"; then
        run_row c "$SC" -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $COOKIE"
        expect_status "$SC" 200 -H "Cookie: $COOKIE" -H "$HDR_ACCEPT" || fail_row c "session lost during the run"
      else fail_row c "the session request is not answered 200 with a JWT"; fi ;;
    d)
      if [ "$REMINT_OK" != 1 ]; then
        fail_row d "no sidecar with re-mint on every request (needs the config knob [jwt] cache = false; see $WORK/sidecar-remint/check.log)"
      elif expect_status "$RM" 200 -H "Cookie: $REMINT_COOKIE" -H "$HDR_ACCEPT" && expect_jwt "http://127.0.0.1:$PORT_REMINT" "$REMINT_COOKIE"; then
        run_row d "$RM" -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $REMINT_COOKIE"
      else fail_row d "the session request is not answered 200 with a JWT"; fi ;;
    p)
      if [ "$BARE_OK" != 1 ]; then fail_row p "the bare proxy did not start: $(tail -3 "$WORK/bare-proxy.log")"
      elif expect_status "$BP" 200; then
        run_row p "$BP" -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $REQUEST_COOKIE"
      else fail_row p "the bare proxy does not answer 200"; fi ;;
    e)
      if [ -z "$SIDECAR_C" ]; then fail_row e "sidecar did not start"
      elif expect_status "$SC" 302 -H "$HDR_ACCEPT"; then
        run_row e "$SC" -H "$HDR_ACCEPT" -H "$HDR_UA"
      else fail_row e "a browser request without session is not answered 302"; fi ;;
    f)
      if [ "$FA_OK" != 1 ]; then fail_row f "nginx with the forward-auth config did not start: $(tail -3 "$WORK/nginx-fa/logs/error.log" 2>/dev/null)"
      elif [ -z "$COOKIE" ]; then fail_row f "no session (sidecar start or login failed)"
      elif expect_status "$FA" 200 -H "Cookie: $COOKIE" -H "$HDR_ACCEPT" && expect_jwt "http://127.0.0.1:$PORT_FA" "$COOKIE"; then
        run_row f "$FA" -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $COOKIE"
      else fail_row f "nginx + auth_request does not answer 200 with a JWT"; fi ;;
    k|m)
      if [ "${CYCLE_OK[$row]:-}" != 1 ]; then fail_row "$row" "the prefilled sidecar did not start or wrote no cookies (see $WORK/sidecar-$row/sidecar.log)"
      elif expect_status "${CYCLE_URL[$row]}" 200 -H "Cookie: $(head -n 1 "$WORK/sidecar-$row/state/bench-cookies.txt")" -H "$HDR_ACCEPT"; then
        run_row "$row" "${CYCLE_URL[$row]}" -s "$WORK/cycle-$row.lua" -H "$HDR_ACCEPT" -H "$HDR_UA"
      else fail_row "$row" "a prefilled session is not answered 200"; fi ;;
    y)
      if [ "$CADDY_OK" != 1 ]; then fail_row y "Caddy did not start: $(tail -3 "$WORK/caddy/caddy.log" 2>/dev/null)"
      elif expect_status "$CY" 200; then
        run_row y "$CY" -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $REQUEST_COOKIE"
      else fail_row y "Caddy does not answer 200"; fi ;;
    o)
      if [ "$APACHE_OK" != 1 ]; then fail_row o "Apache + mod_auth_openidc did not start or the login failed (see $APACHE_DIR)"
      elif apache_authenticated_path "$APACHE_COOKIE"; then
        PROC[o]=$(apache_processes "$APACHE_DIR")
        run_row o "$AP" -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $APACHE_COOKIE"
        apache_authenticated_path "$APACHE_COOKIE" || fail_row o "session lost during the run"
      else fail_row o "not an authenticated path (302 without the cookie, upstream 200 with it)"; fi ;;
    q)
      if [ "$APACHE_PLAIN_OK" != 1 ]; then fail_row q "Apache without auth did not start: $(tail -3 "$WORK/apache-plain/error.log" 2>/dev/null)"
      elif expect_status "$AQ" 200; then
        PROC[q]=$(apache_processes "$WORK/apache-plain")
        run_row q "$AQ" -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $REQUEST_COOKIE"
      else fail_row q "Apache without auth does not answer 200"; fi ;;
    t)
      if [ "$TRIVIAL_OK" != 1 ]; then fail_row t "nginx with the trivial auth endpoint did not start: $(tail -3 "$WORK/nginx-trivial/logs/error.log" 2>/dev/null)"
      elif expect_status "$TR" 200 -H "Cookie: $REQUEST_COOKIE" -H "$HDR_ACCEPT"; then
        run_row t "$TR" -H "$HDR_ACCEPT" -H "$HDR_UA" -H "Cookie: $REQUEST_COOKIE"
      else fail_row t "nginx + trivial auth_request does not answer 200"; fi ;;
    *) die "unknown row $row (rows: $ALL_ROWS)" ;;
  esac
  if [[ "$row" == [ce] ]] && [ -n "$SIDECAR_C" ] && kill -0 "$SIDECAR_C" 2>/dev/null; then
    RSS_AFTER[$row]=$(rss_kib "$SIDECAR_C")
  fi
done
done

# Medians over the rounds.
for row in $ROWS; do
  row_failed "$row" && continue
  [ -n "${L_RPS[$row]:-}" ] || continue
  # shellcheck disable=SC2086 # the lists are space-separated numbers
  {
    RPS[$row]=$(median ${L_RPS[$row]})
    P50[$row]=$(printf '%.0f' "$(median ${L_P50[$row]})")
    P99[$row]=$(printf '%.0f' "$(median ${L_P99[$row]})")
    CPU_PROXY[$row]=$(median ${L_CPU[$row]:-})
    CPU_UP[$row]=$(median ${L_UP[$row]:-})
  }
  MEASURED+=("$row")
done

# Added latency without queueing: one connection, one request at a time. Under the closed loop
# above, p99 is mostly the time a request waits behind the 31 others; here it is the time the
# proxy itself adds.
declare -A LAT_P50=() LAT_P99=() L_LAT50=() L_LAT99=()
for round in $(seq 1 "$ROUNDS"); do
for row in $LATENCY_ROWS; do
  # Only rows whose servers were started (ROWS) and that did not fail.
  [[ " $ROWS " == *" $row "* ]] || continue
  row_failed "$row" && continue
  case $row in
    a) url=$UP; extra=(-H "Cookie: $REQUEST_COOKIE") ;;
    b) url=$NG; extra=(-H "Cookie: $REQUEST_COOKIE") ;;
    p) url=$BP; extra=(-H "Cookie: $REQUEST_COOKIE") ;;
    c) url=$SC; extra=(-H "Cookie: ${COOKIE:-}") ;;
    d) url=$RM; extra=(-H "Cookie: ${REMINT_COOKIE:-}") ;;
    e) url=$SC; extra=() ;;
    f) url=$FA; extra=(-H "Cookie: ${COOKIE:-}") ;;
    y) url=$CY; extra=(-H "Cookie: $REQUEST_COOKIE") ;;
    o) url=$AP; extra=(-H "Cookie: $APACHE_COOKIE") ;;
    q) url=$AQ; extra=(-H "Cookie: $REQUEST_COOKIE") ;;
    t) url=$TR; extra=(-H "Cookie: $REQUEST_COOKIE") ;;
    *) continue ;;
  esac
  "${PIN_LOAD[@]}" wrk -t1 -c1 -d"${WARMUP}s" -H "$HDR_ACCEPT" -H "$HDR_UA" "${extra[@]}" "$url" >/dev/null 2>&1 || true
  out=$("${PIN_LOAD[@]}" wrk -t1 -c1 -d"${LATENCY_DURATION}s" --latency -H "$HDR_ACCEPT" -H "$HDR_UA" "${extra[@]}" "$url" 2>&1) || out=""
  l50=$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  l99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  if [[ "$l50" =~ ^[0-9]+$ && "$l99" =~ ^[0-9]+$ ]]; then
    L_LAT50[$row]+=" $l50"
    L_LAT99[$row]+=" $l99"
    log "round $round, one connection, row $row: p50 $l50 us, p99 $l99 us"
  else
    log "round $round, one connection, row $row: not measured"
  fi
done
done
for row in $LATENCY_ROWS; do
  [[ " $ROWS " == *" $row "* ]] || continue
  if [ -n "${L_LAT99[$row]:-}" ]; then
    # shellcheck disable=SC2086 # space-separated numbers
    LAT_P50[$row]=$(printf '%.0f' "$(median ${L_LAT50[$row]})")
    # shellcheck disable=SC2086
    LAT_P99[$row]=$(printf '%.0f' "$(median ${L_LAT99[$row]})")
  elif ! row_failed "$row"; then
    FAILED+=("latency-$row")
  fi
done

# --- RSS ----------------------------------------------------------------------------------------
declare -A RSS_LINE
for n in $RSS_SIZES; do
  if line=$("$RSS_PROBE" "$n"); then RSS_LINE[$n]=$line; else FAILED+=("rss-$n"); fi
done
JWT_LINE=""
if [ -n "$RSS_SIZES" ]; then JWT_LINE=$("$RSS_PROBE" 100000 --jwt || true); fi

# --- report -------------------------------------------------------------------------------------
label() {
  case $1 in
    a) echo "(a) upstream direct" ;;
    b) echo "(b) nginx reverse proxy" ;;
    p) echo "(p) sidecar's proxy alone, no auth layer" ;;
    c) echo "(c) sidecar, session + cached JWT" ;;
    d) echo "(d) sidecar, JWT re-minted per request" ;;
    e) echo "(e) sidecar, no session -> 302" ;;
    f) echo "(f) nginx + auth_request to sidecar" ;;
    k) echo "(k) sidecar, $PREFILL_K sessions, users cycle" ;;
    m) echo "(m) sidecar, $PREFILL_M sessions, users cycle" ;;
    y) echo "(y) Caddy reverse_proxy" ;;
    o) echo "(o) Apache + mod_auth_openidc, session" ;;
    q) echo "(q) Apache reverse proxy alone, no auth" ;;
    t) echo "(t) nginx + auth_request to return 204" ;;
  esac
}
ratio() { # value base
  if [ -n "$1" ] && [ -n "$2" ]; then awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; else echo "-"; fi
}
fmt_us() { if [ -n "$1" ]; then awk -v v="$1" 'BEGIN { if (v >= 1000 || v <= -1000) printf "%.2f ms", v / 1000; else printf "%d us", v }'; else echo "-"; fi; }

echo
echo "## Load: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2 }')), load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency (after ${WARMUP}s warm-up), GET $PATH_UNDER_TEST; pinning: $PINNING."
echo "Each row measured $ROUNDS times, rows interleaved; the table shows medians (all runs: req/s per round below)."
echo "CPU/req: CPU time of the process under test (proxy: nginx worker / sidecar / Caddy / all of Apache;"
echo "row (a): the upstream; rows (f) and (t): the auth endpoint, sidecar or 204 nginx, not the front nginx)"
echo "and of the upstream nginx worker, divided by the requests wrk completed."
echo
printf '| %-40s | %10s | %9s | %9s | %7s | %7s | %10s | %9s | %9s |\n' "row" "req/s" "p50" "p99" "vs (b)" "vs (a)" "p99 - (a)" "CPU/req" "upstr/req"
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------------------------" "-----------:" "----------:" "----------:" "--------:" "--------:" "-----------:" "----------:" "----------:"
for row in $ROWS; do
  if [ -n "${RPS[$row]:-}" ]; then
    added="-"
    if [ -n "${P99[a]:-}" ] && [ "$row" != a ]; then
      this=${P99[$row]} base=${P99[a]}
      added=$(fmt_us $((this - base)))
    fi
    printf '| %-40s | %10s | %9s | %9s | %7s | %7s | %10s | %9s | %9s |\n' "$(label "$row")" "${RPS[$row]}" \
      "$(fmt_us "${P50[$row]}")" "$(fmt_us "${P99[$row]}")" "$(ratio "${RPS[$row]}" "${RPS[b]:-}")" \
      "$(ratio "${RPS[$row]}" "${RPS[a]:-}")" "$added" "$(fmt_us "${CPU_PROXY[$row]:-}")" "$(fmt_us "${CPU_UP[$row]:-}")"
  else
    printf '| %-40s | %s |\n' "$(label "$row")" "${NOTE[$row]:-not measured}"
  fi
done
echo
if [ -n "${RPS[k]:-}" ] && [ -n "${RPS[m]:-}" ]; then
  echo "Throughput with $PREFILL_M sessions vs $PREFILL_K (m vs k): $(ratio "${RPS[m]}" "${RPS[k]}")"
  echo
fi
if [ -n "${RPS[c]:-}" ] && { [ -n "${RPS[y]:-}" ] || [ -n "${RPS[o]:-}" ]; }; then
  echo "Sidecar with a session (c) vs Caddy (y): $(ratio "${RPS[c]}" "${RPS[y]:-}"); vs Apache + mod_auth_openidc (o): $(ratio "${RPS[c]}" "${RPS[o]:-}")"
  echo
fi
if [ -n "${RPS[f]:-}" ] && [ -n "${RPS[t]:-}" ]; then
  echo "Forward auth: nginx + auth_request to the sidecar (f) vs to a trivial 204 (t): $(ratio "${RPS[f]}" "${RPS[t]}") (target >= 0.90x)"
  echo
fi
for row in "${MEASURED[@]}"; do
  echo "($row) req/s per round:${L_RPS[$row]}; p99 (us) per round:${L_P99[$row]}; CPU/req user/system (us) per round:${L_USR[$row]:-}"
  if [ -n "${NOTE[$row]:-}" ]; then echo "note ($row): ${NOTE[$row]}"; fi
done

if [ ${#LAT_P99[@]} -gt 0 ]; then
  echo
  echo "### Added latency, one connection (wrk -c1 -d${LATENCY_DURATION}s, medians of $ROUNDS rounds: no queueing)"
  echo
  echo "| row | p50 | p99 | p50 - (a) | p99 - (a) |"
  echo "|---|---:|---:|---:|---:|"
  for row in $LATENCY_ROWS; do
    [ -n "${LAT_P99[$row]:-}" ] || continue
    d50="-" d99="-"
    if [ "$row" != a ] && [ -n "${LAT_P99[a]:-}" ]; then
      d50=$(fmt_us $((LAT_P50[$row] - LAT_P50[a])))
      d99=$(fmt_us $((LAT_P99[$row] - LAT_P99[a])))
    fi
    echo "| $(label "$row") | $(fmt_us "${LAT_P50[$row]}") | $(fmt_us "${LAT_P99[$row]}") | $d50 | $d99 |"
  done
  echo
  for row in $LATENCY_ROWS; do
    [ -n "${L_LAT99[$row]:-}" ] && echo "($row) one connection, p99 (us) per round:${L_LAT99[$row]}"
  done
fi

echo
echo "## Sidecar RSS"
echo
echo "| sessions | RSS | how |"
echo "|---:|---:|---|"
if [ -n "$RSS0" ]; then
  echo "| 0 | $((RSS0 / 1024)) MiB ($RSS0 KiB) | measured: the running sidecar (simulated WeChat in-process) after start |"
  for row in $ROWS; do
    if [ -n "${RSS_AFTER[$row]:-}" ]; then
      echo "| 1 | $((RSS_AFTER[$row] / 1024)) MiB (${RSS_AFTER[$row]} KiB) | measured: the same sidecar after row ($row) |"
    fi
  done
else
  FAILED+=("rss-0")
  echo "| 0 | NOT MEASURED | sidecar did not start |"
fi
for row in k m; do
  if [ -n "${RSS_FULL[$row]:-}" ]; then
    if [ "$row" = k ]; then n=$PREFILL_K; else n=$PREFILL_M; fi
    per="-"
    if [ -n "$RSS0" ] && [ "$n" -ge 100000 ]; then per="$(((RSS_FULL[$row] - RSS0) * 1024 / n)) B/session over the sidecar at 0"; fi
    echo "| $n | $((RSS_FULL[$row] / 1024)) MiB (${RSS_FULL[$row]} KiB) | measured: sidecar ($row) after prefilling, before load ($per) |"
  fi
done
for n in $RSS_SIZES; do
  line=${RSS_LINE[$n]:-}
  if [ -n "$line" ] && [ -n "$RSS0" ]; then
    per=$(sed -n 's/.*bytes_per_session=\([0-9]*\).*/\1/p' <<<"$line")
    est=$((RSS0 + n * per / 1024))
    echo "| $n | $((est / 1024)) MiB | RSS at 0 + $n x $per B/session (same store filled in-process: examples/bench_session_rss.rs) |"
  else
    echo "| $n | NOT MEASURED | |"
  fi
done
if [ -n "$JWT_LINE" ]; then
  echo
  echo "Plus, per session active within the JWT lifetime (at most jwt cache_capacity = 100 000 of them):" \
    "$(sed -n 's/.*bytes_per_cached_jwt=\([0-9]*\).*/\1/p' <<<"$JWT_LINE") B for its cached token."
fi
echo
for n in $RSS_SIZES; do if [ -n "${RSS_LINE[$n]:-}" ]; then echo "probe: ${RSS_LINE[$n]}"; fi; done
if [ -n "$JWT_LINE" ]; then echo "probe: $JWT_LINE"; fi

if [ ${#FAILED[@]} -gt 0 ]; then
  echo
  echo "NOT MEASURED: ${FAILED[*]}"
  exit 1
fi
