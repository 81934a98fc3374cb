#!/usr/bin/env bash
# Fault soak of the wechat-oauth-proxy sidecar on loopback (issue 9): existing sessions must not
# notice WeChat failing, Redis restarting or a login flood; logins must recover when WeChat does;
# memory must stay flat.
#
# Run by hand from a clean clone (not part of `cargo test` or CI):
#
#     bench/soak.sh                         # 60 s, 10 000 sessions, Redis store
#     DURATION=10 bench/soak.sh             # a quick proof that the script works
#     STORE=memory bench/soak.sh            # without Redis (no restart phase)
#
# Installs wrk, nginx and redis-server with apt-get when they are missing, builds the release
# binary (`--features redis` for STORE=redis) and starts on 127.0.0.1 (ports PORT_BASE..+3):
#   - a fast upstream (one nginx worker answering 200);
#   - a local redis-server (STORE=redis; AOF on, so a restart keeps the sessions);
#   - the sidecar with the in-process simulated WeChat on a fixed port and SESSIONS prefilled
#     sessions (dev.prefill_sessions; their first 1 024 cookies are written to the state dir).
# Then, for DURATION seconds, all at once:
#   - steady load for existing sessions: wrk, CONNECTIONS connections cycling the 1 024 cookies,
#     every answer counted by status (a wrk Lua script);
#   - a login flood: wrk, FLOOD_CONNECTIONS connections of cookie-less browser navigations;
#   - a scripted login through the simulator every LOGIN_EVERY seconds;
#   - WeChat faults in five equal phases (toggled over the simulator's /_sim/admin/ API):
#       baseline | hang (every API call hangs) | http500 | token (the component token is
#       invalidated every 2 s: 40001) | after (faults cleared: a login must succeed within
#       RECOVERY_SECS);
#   - STORE=redis: redis-server stopped and started again in the middle of the http500 phase.
# Prints the figures and exits non-zero when one is outside its bound:
#   - existing sessions: zero non-2xx answers, zero socket errors or timeouts (wrk --timeout);
#   - logins: every login that starts and ends before the faults succeeds; no login stalls (each ends in a page, success or
#     error, within LOGIN_MAX_SECS); one succeeds within RECOVERY_SECS after the faults end;
#   - RSS: growth from start (after prefill) to end at most RSS_GROWTH_MAX_MIB.
set -euo pipefail
# WeChat's browser: the simulated authorize page, like WeChat's, refuses other browsers.
WECHAT_UA='Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 MicroMessenger/8.0.47.2560(0x28002F35) NetType/WIFI Language/zh_CN'

cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${DURATION:-60}                 # seconds of load and faults
SESSIONS=${SESSIONS:-10000}              # prefilled sessions
STORE=${STORE:-redis}                    # redis or memory
CONNECTIONS=${CONNECTIONS:-16}           # wrk connections for existing sessions
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-4} # wrk connections for the login flood
WRK_TIMEOUT=${WRK_TIMEOUT:-2}            # seconds; a slower answer counts as an error
LOGIN_EVERY=${LOGIN_EVERY:-2}            # seconds between scripted logins
LOGIN_MAX_SECS=${LOGIN_MAX_SECS:-30}     # a login that has not ended by then has stalled
RECOVERY_SECS=${RECOVERY_SECS:-30}       # a login must succeed this soon after the faults end
RSS_GROWTH_MAX_MIB=${RSS_GROWTH_MAX_MIB:-64}
REDIS_MAXMEMORY=${REDIS_MAXMEMORY:-1gb}
PORT_BASE=${PORT_BASE:-18280}
BUILD=${BUILD:-1}                        # 0: use the existing target/release binary
KEEP=${KEEP:-0}                          # 1: keep the work directory (logs, configs)

PORT_PROXY=$PORT_BASE
PORT_UP=$((PORT_BASE + 1))
PORT_SIM=$((PORT_BASE + 2))
PORT_REDIS=$((PORT_BASE + 3))
BASE=http://127.0.0.1:$PORT_PROXY
SIM=http://127.0.0.1:$PORT_SIM
PHASE_SECS=$((DURATION / 5))

log() { echo "[soak.sh] $*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

case $STORE in redis | memory) ;; *) die "STORE must be redis or memory" ;; esac
[ "$PHASE_SECS" -ge 2 ] || die "DURATION must be at least 10 seconds"

# --- tools --------------------------------------------------------------------------------------
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ "$STORE" = redis ]; then command -v redis-server >/dev/null 2>&1 || missing+=(redis-server); fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} with apt-get"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

for port in $PORT_PROXY $PORT_UP $PORT_SIM $PORT_REDIS; do
  if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
    die "port $port is in use; set PORT_BASE to a free range"
  fi
done

FEATURES=()
[ "$STORE" = redis ] && FEATURES=(--features redis)
if [ "$BUILD" = 1 ]; then
  log "building the release binary ${FEATURES[*]}"
  cargo build --release --quiet --bin wechat-oauth-proxy "${FEATURES[@]}"
fi
BIN=$ROOT/target/release/wechat-oauth-proxy
[ -x "$BIN" ] || die "no binary at $BIN"

# --- processes ----------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/wxauth-soak.XXXXXX)
PIDS=()
cleanup() {
  local pid
  touch "$WORK/stop"
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# wrk script: cycles the cookies in $SOAK_COOKIES (none: cookie-less requests) and counts every
# answer by status (wrk's own report counts only statuses >= 400).
cat >"$WORK/soak.lua" <<'LUA'
local cookies = {}
local path = os.getenv("SOAK_COOKIES")
if path and #path > 0 then
  for line in io.lines(path) do
    if #line > 0 then cookies[#cookies + 1] = line end
  end
end
local threads = {}
function setup(thread) threads[#threads + 1] = thread end
function init(args) counts = {} end
local i = 0
function request()
  if #cookies > 0 then
    i = i % #cookies + 1
    wrk.headers["Cookie"] = cookies[i]
  end
  return wrk.format()
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total, keys, bad = {}, {}, 0
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("counts")) do total[s] = (total[s] or 0) + n end
  end
  for s, n in pairs(total) do
    keys[#keys + 1] = s
    if s < 200 or s > 299 then bad = bad + n end
  end
  table.sort(keys)
  local parts = {}
  for _, s in ipairs(keys) do parts[#parts + 1] = s .. ":" .. total[s] end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d non2xx=%d statuses=%s errors=%d error_kinds=connect:%d,read:%d,write:%d,timeout:%d p99_us=%d max_us=%d\n",
    summary.requests, bad, table.concat(parts, ","), e.connect + e.read + e.write + e.timeout,
    e.connect, e.read, e.write, e.timeout, latency:percentile(99.0), latency.max))
end
LUA

retry() { # tries delay command...: runs the command until it succeeds, at most `tries` times
  local n=$1 delay=$2
  shift 2
  while [ "$n" -gt 0 ]; do
    "$@" && return 0
    n=$((n - 1))
    sleep "$delay"
  done
  return 1
}
http_is() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" = "$2" ]; }
redis_up() { [ "$(redis-cli -p "$PORT_REDIS" ping 2>/dev/null || true)" = PONG ]; }
gone() { ! kill -0 "$1" 2>/dev/null; }

# The upstream: one nginx worker answering 200 to everything.
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx/tmp;
  server {
    listen 127.0.0.1:$PORT_UP backlog=4096;
    location / { default_type text/plain; return 200 "soak upstream\n"; }
  }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx/logs/stdout.log" 2>&1 &
PIDS+=($!)
retry 100 0.1 http_is "http://127.0.0.1:$PORT_UP/" 200 || die "the upstream nginx did not start: $(cat "$WORK/nginx/logs/error.log")"

REDIS_PID=""
start_redis() {
  mkdir -p "$WORK/redis"
  redis-server --port "$PORT_REDIS" --bind 127.0.0.1 --save "" --appendonly yes \
    --dir "$WORK/redis" --maxmemory "$REDIS_MAXMEMORY" --maxmemory-policy volatile-lru \
    >>"$WORK/redis/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  retry 200 0.05 redis_up
}
REDIS_DOWN_MS=""
restart_redis() {
  local t0
  t0=$(now_ms)
  kill -TERM "$REDIS_PID"
  retry 200 0.05 gone "$REDIS_PID" || die "redis-server does not stop"
  start_redis || die "redis-server did not come back: $(tail -5 "$WORK/redis/redis.log")"
  REDIS_DOWN_MS=$(($(now_ms) - t0))
  log "redis-server restarted (down ${REDIS_DOWN_MS} ms)"
}
REDIS_LINE=""
if [ "$STORE" = redis ]; then
  start_redis || die "redis-server did not start: $(tail -5 "$WORK/redis/redis.log")"
  REDIS_LINE="redis_url = \"redis://127.0.0.1:$PORT_REDIS/\""
fi

mkdir -p "$WORK/state"
cat >"$WORK/config.toml" <<EOF
# Fault soak only (bench/soak.sh); never use these values anywhere else.
[server]
listen = "127.0.0.1:$PORT_PROXY"
public_url = "$BASE"
upstream = "http://127.0.0.1:$PORT_UP"
state_dir = "$WORK/state"

[auth]
prefix = "/_wxauth"
api_prefixes = ["/api/"]
scope = "snsapi_userinfo"

[wechat]
mode = "component"
appid = "wxa1b2c3d4e5f60708"
component_appid = "wx0123456789abcdef"
component_secret = "dev-component-secret-not-for-production"
message_token = "component_token_demo"
encoding_aes_key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

[session]
store = "$STORE"
$REDIS_LINE
master_secret = "soak-only-master-secret-0123456789abcdef-not-secret"
insecure_allow_http = true

[jwt]
algorithm = "EdDSA"
issuer = "wechat-oauth-proxy-soak"
audience = "soak-upstream"
plain_headers = false

[dev]
simulate_wechat = true
sim_listen = "127.0.0.1:$PORT_SIM"
push_interval_secs = 600
demo_upstream = false
prefill_sessions = $SESSIONS
EOF
"$BIN" --config "$WORK/config.toml" --check >"$WORK/check.log" 2>&1 ||
  die "configuration refused: $(tr '\n' ' ' <"$WORK/check.log")"
log "starting the sidecar ($STORE store, $SESSIONS prefilled sessions)"
RUST_LOG=${RUST_LOG:-warn} "$BIN" --config "$WORK/config.toml" >"$WORK/sidecar.log" 2>&1 &
SIDECAR=$!
PIDS+=("$SIDECAR")
retry 300 0.1 http_is "$BASE/_wxauth/ready" 200 || die "the sidecar is not ready: $(tail -5 "$WORK/sidecar.log")"
COOKIES=$WORK/state/bench-cookies.txt
[ -s "$COOKIES" ] || die "no prefilled cookies in $COOKIES"
[ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $(head -n 1 "$COOKIES")" "$BASE/app/page")" = 200 ] ||
  die "a prefilled session is not answered 200"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
sim_admin() { # action [query]
  curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST "$SIM/_sim/admin/$1${2:+?$2}" | grep -qx 200 ||
    log "sim admin $1 failed"
}

# One scripted login through the simulated WeChat (interactive authorize page, then the
# callback, then the new session on a protected page). Prints "<outcome> <callback status>
# <callback ms>"; outcome: ok, error-page (the callback answered an error page in time),
# stalled (a step did not answer within its timeout), broken (a step answered unexpectedly).
login_once() {
  local jar loc page choose cb status t0 cookie check
  jar=$(mktemp "$WORK/jar.XXXXXX")
  loc=$(curl -s -A "$WECHAT_UA" -m 5 -o /dev/null -w '%{redirect_url}' -c "$jar" -b "$jar" -H 'Accept: text/html' \
    "$BASE/app/login-probe") || { echo "stalled start 0"; return; }
  loc=${loc%%#*}
  [ -n "$loc" ] || { echo "broken start 0"; return; }
  page=$(curl -s -A "$WECHAT_UA" -m 5 "$loc") || { echo "stalled authorize 0"; return; }
  choose=$(grep -o 'href="/_sim/authorize/choose[^"]*"' <<<"$page" | head -n 1 | sed 's/^href="//; s/"$//; s/&amp;/\&/g' || true)
  [ -n "$choose" ] || { echo "broken authorize 0"; return; }
  cb=$(curl -s -m 5 -o /dev/null -w '%{redirect_url}' "$SIM$choose") || { echo "stalled choose 0"; return; }
  [ -n "$cb" ] || { echo "broken choose 0"; return; }
  t0=$(now_ms)
  status=$(curl -s -m "$LOGIN_MAX_SECS" -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" \
    -H 'Accept: text/html' "$cb") || status=000
  t0=$(($(now_ms) - t0))
  case $status in
    302)
      cookie=$(awk '$6 == "wxauth_session" { print $6 "=" $7 }' "$jar")
      check=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$BASE/app/page" || true)
      if [ "$check" = 200 ]; then echo "ok $status $t0"; else echo "broken $status $t0"; fi ;;
    000) echo "stalled $status $t0" ;;
    4?? | 5??) echo "error-page $status $t0" ;;
    *) echo "broken $status $t0" ;;
  esac
  rm -f "$jar"
}

login_once >"$WORK/first-login.txt"
read -r outcome _ _ <"$WORK/first-login.txt"
[ "$outcome" = ok ] || die "a login before the soak failed: $(cat "$WORK/first-login.txt"); $(tail -3 "$WORK/sidecar.log")"

# --- the soak -----------------------------------------------------------------------------------
RSS_START=$(rss_kib "$SIDECAR")
log "soak: ${DURATION} s, phases of ${PHASE_SECS} s: baseline, hang, http500, token, after"
echo baseline >"$WORK/phase"
T0=$(now_ms)
at() { # seconds since the start: sleep until then
  local wait_ms=$((T0 + $1 * 1000 - $(now_ms)))
  if [ "$wait_ms" -gt 0 ]; then sleep "$(awk -v m="$wait_ms" 'BEGIN { printf "%.3f", m / 1000 }')"; fi
}

SOAK_COOKIES=$COOKIES wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout "${WRK_TIMEOUT}s" \
  -s "$WORK/soak.lua" -H 'Accept: text/html' "$BASE/app/page?id=42" >"$WORK/wrk-sessions.txt" 2>&1 &
WRK_SESSIONS=$!
PIDS+=("$WRK_SESSIONS")
wrk -t1 -c"$FLOOD_CONNECTIONS" -d"${DURATION}s" --timeout "${WRK_TIMEOUT}s" \
  -s "$WORK/soak.lua" -H 'Accept: text/html' "$BASE/app/flood" >"$WORK/wrk-flood.txt" 2>&1 &
WRK_FLOOD=$!
PIDS+=("$WRK_FLOOD")

# Scripted logins every LOGIN_EVERY seconds, each tagged with its phase ("across" when it
# started in one phase and ended in another).
(
  while [ ! -e "$WORK/stop-logins" ]; do
    {
      phase=$(cat "$WORK/phase")
      result=$(login_once)
      [ "$(cat "$WORK/phase")" = "$phase" ] || phase=across
      echo "$phase $result" >>"$WORK/logins.txt"
    } &
    sleep "$LOGIN_EVERY"
  done
  wait
) &
PROBER=$!
PIDS+=("$PROBER")
(
  while [ ! -e "$WORK/stop-logins" ]; do
    rss_kib "$SIDECAR" >>"$WORK/rss.txt" 2>/dev/null || true
    sleep 1
  done
) &
PIDS+=($!)

at "$PHASE_SECS"
echo hang >"$WORK/phase"
sim_admin fault "endpoint=api&failure=hang"
at $((2 * PHASE_SECS))
echo http500 >"$WORK/phase"
sim_admin clear
sim_admin fault "endpoint=api&failure=http500"
if [ "$STORE" = redis ]; then
  at $((DURATION / 2))
  restart_redis
fi
at $((3 * PHASE_SECS))
echo token >"$WORK/phase"
sim_admin clear
while [ $(($(now_ms) - T0)) -lt $((4 * PHASE_SECS * 1000)) ]; do
  sim_admin invalidate_token
  sleep 2
done
echo after >"$WORK/phase"
sim_admin clear
FAULTS_END=$(now_ms)
RECOVERED_MS=""
while [ $(($(now_ms) - FAULTS_END)) -lt $((RECOVERY_SECS * 1000)) ]; do
  read -r outcome _ _ < <(login_once)
  if [ "$outcome" = ok ]; then RECOVERED_MS=$(($(now_ms) - FAULTS_END)); break; fi
  sleep 0.5
done
log "faults over; login recovered after ${RECOVERED_MS:-never} ms"

wait "$WRK_SESSIONS" || true
wait "$WRK_FLOOD" || true
touch "$WORK/stop-logins"
wait "$PROBER" || true
sleep 1
RSS_END=$(rss_kib "$SIDECAR")
RSS_PEAK=$(sort -n "$WORK/rss.txt" | tail -n 1)
CALLS=$(curl -s -m 5 "$SIM/_sim/admin/calls" || true)
REDIS_MEM=""
if [ "$STORE" = redis ]; then
  REDIS_MEM=$(redis-cli -p "$PORT_REDIS" info memory | awk -F: '/^used_memory_human:/ { print $2 }' | tr -d '\r')
fi

# --- report -------------------------------------------------------------------------------------
result() { # file key
  grep -o "^RESULT .*" "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'
}
S_REQ=$(result "$WORK/wrk-sessions.txt" requests)
S_BAD=$(result "$WORK/wrk-sessions.txt" non2xx)
S_ERR=$(result "$WORK/wrk-sessions.txt" errors)
[ -n "$S_REQ" ] && [ -n "$S_BAD" ] && [ -n "$S_ERR" ] ||
  die "could not read the session load's results: $(tail -5 "$WORK/wrk-sessions.txt")"
F_REQ=$(result "$WORK/wrk-flood.txt" requests)

FAILED=()
check() { # description condition...
  local what=$1
  shift
  if "$@"; then echo "  ok    $what"; else echo "  FAIL  $what"; FAILED+=("$what"); fi
}

echo
echo "Fault soak: ${DURATION} s, ${SESSIONS} sessions (${STORE} store), ${CONNECTIONS} connections cycling $(wc -l <"$COOKIES") cookies; login flood ${FLOOD_CONNECTIONS} connections"
echo
echo "existing sessions: $S_REQ requests ($((S_REQ / DURATION))/s), non-2xx $S_BAD ($(result "$WORK/wrk-sessions.txt" statuses)), socket errors $S_ERR ($(result "$WORK/wrk-sessions.txt" error_kinds)), p99 $(result "$WORK/wrk-sessions.txt" p99_us) us, max $(result "$WORK/wrk-sessions.txt" max_us) us"
echo "login flood:       ${F_REQ:-?} requests ($((${F_REQ:-0} / DURATION))/s), answers $(result "$WORK/wrk-flood.txt" statuses), socket errors $(result "$WORK/wrk-flood.txt" errors)"
echo "scripted logins during the soak (outcome count, slowest callback), by phase:"
for phase in baseline hang http500 token after across; do
  line=$(awk -v p="$phase" '$1 == p { n[$2]++; if ($4 > max) max = $4 } END {
    for (o in n) printf "%s %d, ", o, n[o]; if (length(n)) printf "slowest %.1f s", max / 1000 }' "$WORK/logins.txt" 2>/dev/null || true)
  printf '  %-9s %s\n' "$phase" "${line:-none}"
done
echo "login recovery:    first login ok $(if [ -n "$RECOVERED_MS" ]; then echo "$RECOVERED_MS ms"; else echo never; fi) after the faults ended"
if [ "$STORE" = redis ]; then echo "redis restart:     down ${REDIS_DOWN_MS:-?} ms at t = $((DURATION / 2)) s; used memory at the end ${REDIS_MEM:-?}"; fi
echo "simulated WeChat:  ${CALLS:-?}"
echo "sidecar RSS:       start $((RSS_START / 1024)) MiB, peak $((${RSS_PEAK:-0} / 1024)) MiB, end $((RSS_END / 1024)) MiB"
echo
BASELINE_OK=$(awk '$1 == "baseline" && $2 == "ok"' "$WORK/logins.txt" | wc -l)
BASELINE_ALL=$(awk '$1 == "baseline"' "$WORK/logins.txt" | wc -l)
STUCK=$(awk '$2 == "stalled" || $2 == "broken"' "$WORK/logins.txt" | wc -l)
check "existing sessions: 0 non-2xx answers (got $S_BAD)" [ "$S_BAD" = 0 ]
check "existing sessions: 0 socket errors or timeouts over ${WRK_TIMEOUT} s (got $S_ERR)" [ "$S_ERR" = 0 ]
check "existing sessions: load was served (got $S_REQ requests)" [ "$S_REQ" -gt 0 ]
check "logins before the faults: all ok (got $BASELINE_OK of $BASELINE_ALL, and the one before the soak)" \
  test "$BASELINE_OK" = "$BASELINE_ALL"
check "logins: none stalled or broken, each ended within ${LOGIN_MAX_SECS} s (got $STUCK)" [ "$STUCK" = 0 ]
check "logins recover within ${RECOVERY_SECS} s after WeChat does (got ${RECOVERED_MS:-never} ms)" [ -n "$RECOVERED_MS" ]
check "RSS growth at most ${RSS_GROWTH_MAX_MIB} MiB (got $(((RSS_END - RSS_START) / 1024)) MiB)" \
  [ $(((RSS_END - RSS_START) / 1024)) -le "$RSS_GROWTH_MAX_MIB" ]
if [ ${#FAILED[@]} -gt 0 ]; then
  if [ "$KEEP" = 1 ]; then
    log "${#FAILED[@]} figure(s) outside their bounds; logs in $WORK"
  else
    log "${#FAILED[@]} figure(s) outside their bounds; run again with KEEP=1 to keep the logs"
  fi
  exit 1
fi
