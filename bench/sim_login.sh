# shellcheck shell=bash
# Sourced by bench/load.sh and bench/proxy_instructions.sh: one login through the simulated
# WeChat of a sidecar started with bench/config.toml (dev.simulate_wechat), as a phone would.

# WeChat's in-app browser: the simulator's authorize page refuses other browsers, as WeChat does.
WECHAT_UA='Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 MicroMessenger/8.0.47.2560(0x28002F35) NetType/WIFI Language/zh_CN'

# Logs in on the sidecar at 127.0.0.1:PORT, keeping cookies in JAR; prints the session cookie
# (name=value), or fails. Each step is bounded by SECS seconds (default 10).
sim_login() { # port jar [secs]
  local base=http://127.0.0.1:$1 jar=$2 secs=${3:-10} loc page choose sim cb status
  rm -f "$jar"
  loc=$(curl -s -m "$secs" -A "$WECHAT_UA" -o /dev/null -w '%{redirect_url}' -c "$jar" -b "$jar" -H 'Accept: text/html' "$base/app/page")
  loc=${loc%%#*}
  [ -n "$loc" ] || return 1
  page=$(curl -s -m "$secs" -A "$WECHAT_UA" "$loc")
  choose=$(grep -o 'href="/_sim/authorize/choose[^"]*"' <<<"$page" | head -n 1 | sed 's/^href="//; s/"$//; s/&amp;/\&/g')
  sim=$(grep -oE '^https?://[^/]+' <<<"$loc")
  [ -n "$choose" ] && [ -n "$sim" ] || return 1
  cb=$(curl -s -m "$secs" -o /dev/null -w '%{redirect_url}' "$sim$choose")
  status=$(curl -s -m "$secs" -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" -H 'Accept: text/html' "$cb")
  [ "$status" = 302 ] || return 1
  awk '$6 == "wxauth_session" { print $6 "=" $7 }' "$jar"
}
