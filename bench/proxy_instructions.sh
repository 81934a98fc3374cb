#!/usr/bin/env bash
# User-space instructions per request of one process under load, counted by callgrind:
# deterministic, whatever else the machine is doing. The rows are those of bench/load.sh, with
# the same request; each counts the process whose CPU that row's CPU/req column reports:
#
#   p  the bare proxy (examples/bench_bare_proxy: accept loop + upstream client, no auth layer)
#   c  the sidecar (target/release/wechat-oauth-proxy) with a session and the cached JWT
#   b  nginx as a plain reverse proxy (one process, `master_process off`)
#   f  the sidecar answering nginx's auth_request checks (front nginx not counted)
#   t  an nginx answering every auth_request check with `return 204` (front nginx not counted)
#
#     bench/proxy_instructions.sh                 # ROWS="p c b f t"
#     ROWS="c b" SECS=10 CONNECTIONS=4 bench/proxy_instructions.sh
#     WORKERS=2 ROWS=c bench/proxy_instructions.sh  # the sidecar with server.workers = 2
#
# A one-worker nginx `return 200` is the upstream of every row. The process under test runs under
# valgrind on CPU 0 (so the sidecar picks tokio's single-threaded scheduler, as in bench/load.sh),
# the other processes on CPU 0 too, wrk on CPU 1. After a 3 s warm-up the counters are zeroed, wrk
# runs SECS seconds, and the instructions of that interval are divided by the requests wrk
# completed. Kernel work (the loopback TCP stack) is not counted: compare with CPU/req of load.sh.
# Needs nginx, wrk, valgrind, curl (apt-get install nginx-light wrk valgrind curl).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=bench/sim_login.sh
. "$ROOT/bench/sim_login.sh"
ROWS=${ROWS:-p c b f t}
SECS=${SECS:-10}
CONNECTIONS=${CONNECTIONS:-4}
PORT_BASE=${PORT_BASE:-18190}
BARE=${BARE:-target/release/examples/bench_bare_proxy}
BIN=${BIN:-target/release/wechat-oauth-proxy}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
PORT_UP=$((PORT_BASE + 1))
PORT_TEST=$PORT_BASE        # where wrk sends its requests
PORT_AUTH=$((PORT_BASE + 2)) # the auth endpoint behind the front nginx (rows f, t)
# The release binaries with the default features (the simulated WeChat gives row c its login;
# scripts/package.sh leaves a binary without it in the same place).
cargo build --release --quiet --bin wechat-oauth-proxy --example bench_bare_proxy
W=$(mktemp -d /tmp/wxauth-cg.XXXXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
log() { echo "proxy_instructions: $*" >&2; }

nginx_conf() { # dir port server-block-body [extra-http-block] [extra-main-line]
  mkdir -p "$1/logs" "$1/tmp"
  local server=""
  [ -z "$2" ] || server="server { listen 127.0.0.1:$2 backlog=4096; $3 }"
  cat >"$1/nginx.conf" <<NG
worker_processes 1; daemon off; pid $1/nginx.pid; error_log $1/logs/error.log warn;
${5:-}
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $1/tmp; proxy_temp_path $1/tmp; fastcgi_temp_path $1/tmp;
  uwsgi_temp_path $1/tmp; scgi_temp_path $1/tmp;
  ${4:-}
  $server
}
NG
}
# Starts nginx from DIR; under callgrind (one process: master_process off) when $2 is "cg".
start_nginx() { # dir [cg]
  if [ "${2:-}" = cg ]; then
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$1/cg.out" \
      "$NGINX" -p "$1" -c "$1/nginx.conf" -g 'master_process off;' >"$1/logs/stdout.log" 2>&1 &
    VG=$!
  else
    taskset -c 0 "$NGINX" -p "$1" -c "$1/nginx.conf" >"$1/logs/stdout.log" 2>&1 &
  fi
  PIDS+=("$!")
}
wait_http() { # url [tries]: until it answers 2xx
  for _ in $(seq "${2:-100}"); do
    [[ $(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1") == 2* ]] && return 0
    sleep 0.3
  done
  return 1
}
# The sidecar with bench/config.toml (simulated WeChat in-process), under callgrind.
start_sidecar() {
  mkdir -p "$W/sidecar"
  sed "s/@UPSTREAM_PORT@/$PORT_UP/" "$ROOT/bench/config.toml" >"$W/sidecar/config.toml"
  [ -z "${WORKERS:-}" ] || sed -i "s/^\[server\]$/[server]\nworkers = $WORKERS/" "$W/sidecar/config.toml"
  RUST_LOG=warn taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$W/sidecar/cg.out" \
    "$BIN" --config "$W/sidecar/config.toml" --listen "127.0.0.1:$1" \
    --public-url "http://127.0.0.1:$1" --state-dir "$W/sidecar/state" >"$W/sidecar/log" 2>&1 &
  VG=$!
  PIDS+=("$VG")
  # Ready = the simulator pushed a ticket and the component token was fetched (slow under valgrind).
  wait_http "http://127.0.0.1:$1/_wxauth/ready" 400 || { log "sidecar not ready: $(tail -5 "$W/sidecar/log")"; return 1; }
}
login() { sim_login "$1" "$W/jar" 30; }  # port (bench/sim_login.sh; slow under valgrind)
# The front nginx of rows f and t: deploy/nginx/forward-auth.conf, auth endpoint on PORT_AUTH.
front_nginx() {
  mkdir -p "$W/front"
  sed -e "s/server 127.0.0.1:8080;/server 127.0.0.1:$PORT_AUTH;/" \
    -e "s/server 127.0.0.1:3000;/server 127.0.0.1:$PORT_UP;/" \
    -e "s/listen 80;/listen 127.0.0.1:$PORT_TEST backlog=4096;/" \
    "$ROOT/deploy/nginx/forward-auth.conf" >"$W/front/forward-auth.conf"
  nginx_conf "$W/front" "" "" "include $W/front/forward-auth.conf;"
  start_nginx "$W/front"
}

# Measures the process $VG (under callgrind, output prefix $1) with the request of load.sh.
measure() { # row cg-out-prefix cookie
  local url="http://127.0.0.1:$PORT_TEST/app/page?id=42" reqs dump ir
  local h=(-H 'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'
    -H 'User-Agent: Mozilla/5.0 (bench)' -H "Cookie: $3")
  local status
  status=$(curl -s -o /dev/null -m 30 -w '%{http_code}' "${h[@]}" "$url")
  [ "$status" = 200 ] || { log "row $1: the request answers $status, not 200"; return 1; }
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d3s "${h[@]}" "$url" >/dev/null
  callgrind_control -z "$VG" >/dev/null 2>&1
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECS}s" "${h[@]}" "$url" >"$W/wrk.$1"
  callgrind_control -d "$VG" >/dev/null 2>&1
  sleep 1
  reqs=$(awk '/requests in/ {print $1}' "$W/wrk.$1")
  dump=$(ls -t "$2".* | head -1)
  ir=$(grep -E '^(summary|totals):' "$dump" | head -1 | awk '{print $2}')
  printf '%-4s requests=%-8s instructions=%-12s per_request=%s\n' "$1" "$reqs" "$ir" "$((ir / reqs))"
  [ -z "${KEEP_DUMPS:-}" ] || cp "$dump" "$KEEP_DUMPS/callgrind.$1"
}
stop_all_but_upstream() {
  local keep=$1
  for pid in "${PIDS[@]}"; do [ "$pid" = "$keep" ] || kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do [ "$pid" = "$keep" ] || wait "$pid" 2>/dev/null || true; done
  PIDS=("$keep")
  sleep 0.5
}

nginx_conf "$W/upstream" "$PORT_UP" 'location / { default_type text/plain; return 200 "hello from the bench upstream\n"; }'
start_nginx "$W/upstream"
UPSTREAM_PID=${PIDS[0]}
wait_http "http://127.0.0.1:$PORT_UP/" || { log "upstream nginx did not start"; exit 1; }
STANDIN="wxauth_session=$(head -c 50 /dev/urandom | base64 | tr -d '\n=/+' | head -c 68)"

for row in $ROWS; do
  case $row in
    p)
      taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$W/p.cg.out" "$BARE" \
        "127.0.0.1:$PORT_TEST" "http://127.0.0.1:$PORT_UP" >"$W/p.log" 2>&1 &
      VG=$!; PIDS+=("$VG")
      wait_http "http://127.0.0.1:$PORT_TEST/" && measure p "$W/p.cg.out" "$STANDIN" ;;
    b)
      nginx_conf "$W/b" "$PORT_TEST" "location / { proxy_pass http://bench_upstream; proxy_http_version 1.1;
        proxy_set_header Connection \"\"; proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto \$scheme; }" \
        "upstream bench_upstream { server 127.0.0.1:$PORT_UP; keepalive 64; }"
      start_nginx "$W/b" cg
      wait_http "http://127.0.0.1:$PORT_TEST/" && measure b "$W/b/cg.out" "$STANDIN" ;;
    c)
      start_sidecar "$PORT_TEST" && COOKIE=$(login "$PORT_TEST") && [ -n "$COOKIE" ] \
        && measure c "$W/sidecar/cg.out" "$COOKIE" || log "row c failed: $(tail -3 "$W/sidecar/log" 2>/dev/null)" ;;
    f)
      front_nginx
      start_sidecar "$PORT_AUTH" && COOKIE=$(login "$PORT_AUTH") && [ -n "$COOKIE" ] \
        && wait_http "http://127.0.0.1:$PORT_TEST/_wxauth/ready" \
        && measure f "$W/sidecar/cg.out" "$COOKIE" || log "row f failed: $(tail -3 "$W/sidecar/log" 2>/dev/null)" ;;
    t)
      front_nginx
      nginx_conf "$W/t" "$PORT_AUTH" 'location / { return 204; }'
      start_nginx "$W/t" cg
      wait_http "http://127.0.0.1:$PORT_AUTH/" && wait_http "http://127.0.0.1:$PORT_TEST/_wxauth/ready" && measure t "$W/t/cg.out" "$STANDIN" ;;
    *) log "unknown row $row" ;;
  esac
  stop_all_but_upstream "$UPSTREAM_PID"
  rm -rf "$W/sidecar"
done
