#!/usr/bin/env bash
# Instructions per proxied request through the bare proxy (examples/bench_bare_proxy, row (p) of
# bench/load.sh), counted by callgrind: deterministic, whatever else the machine is doing.
#
#     cargo build --release --example bench_bare_proxy
#     bench/proxy_instructions.sh [BINARY]          # default target/release/examples/bench_bare_proxy
#     SECS=10 CONNECTIONS=4 bench/proxy_instructions.sh
#
# Starts a one-worker nginx `return 200` upstream (ports PORT_BASE+1) and the proxy under valgrind
# (PORT_BASE), both on CPU 0 (so the proxy uses tokio's single-threaded scheduler, as in
# bench/load.sh); wrk on CPU 1 sends the load script's request. After a 3 s warm-up the counters
# are zeroed, wrk runs SECS seconds, and the instructions of that interval are divided by the
# requests wrk completed. Needs nginx, wrk, valgrind (apt-get install nginx-light wrk valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/examples/bench_bare_proxy}
SECS=${SECS:-10}
CONNECTIONS=${CONNECTIONS:-4}
PORT_BASE=${PORT_BASE:-18190}
W=$(mktemp -d /tmp/wxauth-cg.XXXXXX)
mkdir -p "$W/logs" "$W/tmp"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"' EXIT
cat >"$W/nginx.conf" <<NG
worker_processes 1; daemon off; pid $W/nginx.pid; error_log $W/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path $W/tmp; proxy_temp_path $W/tmp; fastcgi_temp_path $W/tmp;
  uwsgi_temp_path $W/tmp; scgi_temp_path $W/tmp;
  server { listen 127.0.0.1:$((PORT_BASE + 1)) backlog=4096;
    location / { default_type text/plain; return 200 "hello from the bench upstream\n"; } }
}
NG
taskset -c 0 "$(command -v nginx || echo /usr/sbin/nginx)" -p "$W" -c "$W/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" "$BIN" \
  "127.0.0.1:$PORT_BASE" "http://127.0.0.1:$((PORT_BASE + 1))" >"$W/proxy.log" 2>&1 &
VG=$!
PIDS+=($VG)
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT_BASE/" && break
  sleep 0.3
done
URL="http://127.0.0.1:$PORT_BASE/app/page?id=42"
H=(-H 'Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8'
  -H 'User-Agent: Mozilla/5.0 (bench)' -H 'Cookie: __Host-wxauth=abcdefghijklmnopqrstuvwxyz0123456789')
taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d3s "${H[@]}" "$URL" >/dev/null
callgrind_control -z "$VG" >/dev/null 2>&1
taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${SECS}s" "${H[@]}" "$URL" >"$W/wrk.txt"
callgrind_control -d "$VG" >/dev/null 2>&1
sleep 1
REQS=$(awk '/requests in/ {print $1}' "$W/wrk.txt")
DUMP=$(ls -t "$W"/cg.out.* | head -1)
IR=$(grep -E '^(summary|totals):' "$DUMP" | head -1 | awk '{print $2}')
echo "requests=$REQS instructions=$IR per_request=$((IR / REQS))"
