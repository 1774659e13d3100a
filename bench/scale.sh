#!/usr/bin/env bash
# scale.sh GATEWAY_BIN [SECTION...]: how the gateway's cost grows with the
# work, beside nginx measured the same way in the same run. Sections (all by
# default): cores connections config plugins bodies overload.
#
#   cores        S1 and S3 with one worker and with one per CPU (WORKERS),
#                nginx and nginx+Lua beside: requests/s and CPU per request.
#                Nothing is pinned: wrk shares the machine with the servers.
#   connections  IDLE idle keep-alive clients (default 10000), each after one
#                request: resident memory per connection, then S1's CPU per
#                request while they are held; SLOW clients (default 1000)
#                sending their request a byte a second beside S1 traffic.
#   config       APIS (10, 100 and 1000) APIs of 10 endpoints: start-up time,
#                resident memory, reload time, S1's CPU per request to the
#                last API (past its ten endpoints), against S1 with 2 APIs.
#   plugins      PLUGINS (1, 10 and 100) distinct plugins (the bench plugin with a
#                different custom section each): start-up with a cold and a
#                warm compile cache, memory per plugin and per pooled slot.
#   bodies       1 GiB up and down through the proxy (nginx beside, without
#                request buffering) and into an endpoint whose plugin reads
#                the body (refused at the API's limit): peak memory, time.
#   overload     S3 at 1.5x its measured capacity, at a fixed rate from
#                OVERLOAD_CONNS (256) connections (h2load --rps), then at half,
#                twice: latency percentiles, errors, what could not be sent
#                on time, and recovery.
#
# Servers run on SERVER_CPU and wrk on WRK_CPU, as in the other scripts,
# except for `cores`. Everything listens on 127.0.0.1:18090-18093; the
# traffic is bounded in count and time. Needs nginx (with the Lua module),
# wrk, curl, python3 and h2load (apt-get install nghttp2-client).
set -euo pipefail

GATEWAY_BIN=$(realpath "${1:?usage: scale.sh GATEWAY_BIN [SECTION...]}")
shift
SECTIONS=${*:-cores connections config plugins bodies overload}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
IDLE=${IDLE:-10000}
SLOW=${SLOW:-1000}
APIS=${APIS:-10 100 1000}
PLUGINS=${PLUGINS:-1 10 100}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
UP=18090 NGINX=18091 GW=18092 ADMIN=18093
HERE=$(dirname "$(realpath "$0")")
PLUGIN=${PLUGIN:-$HERE/plugins/bench.wasm}
WORK=$(mktemp -d /tmp/portcullis-scale-bench.XXXXXX)
PIDS=()

NAME=scale.sh
# shellcheck source=common.sh
source "$HERE/common.sh"
preflight $UP $NGINX $GW $ADMIN
[[ -f $PLUGIN ]] || { echo "scale.sh: $PLUGIN is missing (cargo xtask bench scale copies it)" >&2; exit 1; }

say() { printf '\n== %s ==\n' "$*"; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
# The nginx worker (the child of the master, whose pid start() recorded).
worker_of() { pgrep -P "$1" | head -1; }
stop_last() { kill -- "-${PIDS[-1]}" 2>/dev/null || true; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'; }
now_ms() { date +%s%3N; }

# The upstream: {"ok":true} on every path, a 1 GiB file at /big, and every
# request body read and thrown away.
# (The nginx workers run as nobody: they must be able to read it.)
chmod 0755 "$WORK"
truncate -s 1G "$WORK/big"
chmod 0644 "$WORK/big"
nginx_conf upstream "
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$UP backlog=4096;
    location ~ /big\$ { root $WORK; try_files /big =404; }
    location / { default_type application/json; return 200 '{\"ok\":true}'; }
  }"
sed -i 's/worker_connections 4096/worker_connections 30000/; s/^worker_processes 1;/worker_processes 1;\nworker_rlimit_nofile 30000;/' "$WORK/upstream/nginx.conf"
start upstream nginx -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log"
wait_for "http://127.0.0.1:$UP/"

# nginx as the proxy beside the gateway: S1 (keep-alive upstream), S3 in Lua.
nginx_proxy() { # workers
  local lua=/usr/lib/nginx/modules
  nginx_conf proxy "
  client_max_body_size 0;
  proxy_request_buffering off;
  proxy_buffering off;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX backlog=4096;
    location /s3 { default_type application/json; content_by_lua_block {
      ngx.print(require('cjson').encode({ virtual = true, user = ngx.var.http_x_user or 'anon', path = ngx.var.uri })) } }
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
  sed -i "s|^worker_processes 1;|load_module $lua/ndk_http_module.so;\nload_module $lua/ngx_http_lua_module.so;\nworker_processes $1;\nworker_rlimit_nofile 30000;|; s|worker_connections 4096|worker_connections 30000|" "$WORK/proxy/nginx.conf"
  start nginx nginx -c "$WORK/proxy/nginx.conf" -e "$WORK/proxy/error.log"
  wait_for "http://127.0.0.1:$NGINX/s1"
}

# The gateway on $WORK/gw/gateway.yaml (written by the caller).
gateway() { # workers
  start portcullis env -u RUST_BACKTRACE PORTCULLIS_LOG=warn "$GATEWAY_BIN" serve \
    --config "$WORK/gw/gateway.yaml" --workers "$1"
}
gw_config() { # extra YAML lines
  rm -rf "$WORK/gw"; mkdir -p "$WORK/gw/apis" "$WORK/gw/cache"
  cat >"$WORK/gw/gateway.yaml" <<YAML
listen: 127.0.0.1:$GW
admin_listen: 127.0.0.1:$ADMIN
admin_secret: scale-bench-secret
apis: [apis/]
plugin_cache: $WORK/gw/cache
session_store: $WORK/gw/sessions.redb
# Idle keep-alive clients are closed after the head timeout: hold them longer.
client_head_timeout_ms: 600000
$1
YAML
  printf 'id: s1\nlisten_path: /s1\nupstream: http://127.0.0.1:%s\n' "$UP" >"$WORK/gw/apis/s1.yaml"
  printf 'id: s3\nlisten_path: /s3\nupstream: http://127.0.0.1:%s\nendpoints:\n  - path: /\n    plugin: { path: %s, function: virtual }\n' \
    "$UP" "$PLUGIN" >"$WORK/gw/apis/s3.yaml"
}

cores() {
  say "cores: one worker against one per CPU ($(nproc)), unpinned"
  printf '%-12s %-4s %8s %10s %12s\n' server scen workers req/s cpu_us/req
  # The proxies (not the upstream, started pinned) and wrk may use every CPU.
  local SERVER_CPU=0-$(($(nproc) - 1)) workers
  for workers in 1 "$(nproc)"; do
    nginx_proxy "$workers"; gw_config ""; gateway "$workers"; wait_for "http://127.0.0.1:$GW/s1"
    local nginx_pg=${PIDS[-2]} gw_pg=${PIDS[-1]} scen
    for scen in s1 s3; do
      read -r rps us < <(WRK_CPU=$SERVER_CPU measure "$nginx_pg" "http://127.0.0.1:$NGINX/$scen" -H 'X-User: alice' -t"$workers")
      printf '%-12s %-4s %8s %10s %12s\n' "nginx$([[ $scen == s3 ]] && echo +lua)" "$scen" "$workers" "$rps" "$us"
      read -r rps us < <(WRK_CPU=$SERVER_CPU measure "$gw_pg" "http://127.0.0.1:$GW/$scen" -H 'X-User: alice' -t"$workers")
      printf '%-12s %-4s %8s %10s %12s\n' portcullis "$scen" "$workers" "$rps" "$us"
    done
    stop_last; stop_last
  done
}

connections() {
  say "connections: $IDLE idle keep-alive clients, then $SLOW slow ones"
  nginx_proxy 1; gw_config ""; gateway 1; wait_for "http://127.0.0.1:$GW/s1"
  local nginx_pg=${PIDS[-2]} gw_pg=${PIDS[-1]}
  local nginx_worker; nginx_worker=$(worker_of "$nginx_pg")
  printf '%-11s %12s %12s %12s %14s %14s\n' server rss_before_kb rss_held_kb kb_per_conn s1_us_alone s1_us_held
  local server port pid
  for server in nginx portcullis; do
    if [[ $server == nginx ]]; then port=$NGINX pg=$nginx_pg pid=$nginx_worker; else port=$GW pg=$gw_pg pid=$gw_pg; fi
    local alone held before after
    read -r _ alone < <(measure "$pg" "http://127.0.0.1:$port/s1")
    before=$(rss_kb "$pid")
    coproc HOLD { taskset -c "$WRK_CPU" python3 "$HERE/conns.py" idle "$IDLE" "http://127.0.0.1:$port/s1"; }
    local ready; read -r ready _ <&"${HOLD[0]}" || true
    [[ $ready == ready ]] || { echo "scale.sh: the idle clients did not all connect to $server" >&2; exit 1; }
    sleep 2
    after=$(rss_kb "$pid")
    read -r _ held < <(measure "$pg" "http://127.0.0.1:$port/s1")
    kill "$HOLD_PID"; wait "$HOLD_PID" 2>/dev/null || true
    printf '%-11s %12s %12s %12.2f %14s %14s\n' "$server" "$before" "$after" \
      "$(awk -v a="$before" -v b="$after" -v n="$IDLE" 'BEGIN { print (b - a) / n }')" "$alone" "$held"
  done
  printf '\n%-11s %12s %12s %10s %10s\n' server rps_alone rps_slow p99_alone p99_slow
  for server in nginx portcullis; do
    if [[ $server == nginx ]]; then port=$NGINX; else port=$GW; fi
    local url="http://127.0.0.1:$port/s1" a b
    a=$(taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$url")
    coproc SLOWC { taskset -c "$WRK_CPU" python3 "$HERE/conns.py" slow "$SLOW" "$url"; }
    local ready; read -r ready _ <&"${SLOWC[0]}" || true
    b=$(taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$url")
    kill "$SLOWC_PID"; wait "$SLOWC_PID" 2>/dev/null || true
    printf '%-11s %12s %12s %10s %10s\n' "$server" \
      "$(awk '/Requests\/sec/ {print $2}' <<<"$a")" "$(awk '/Requests\/sec/ {print $2}' <<<"$b")" \
      "$(awk '$1 == "99%" {print $2}' <<<"$a")" "$(awk '$1 == "99%" {print $2}' <<<"$b")"
  done
  stop_last; stop_last
}

# N APIs of 10 endpoints each in $WORK/gw/apis (an endpoint needs a plugin:
# the bench plugin's noop, one component for all of them).
many_apis() { # n
  local i j
  for ((i = 1; i <= $1; i++)); do
    {
      printf 'id: api%d\nlisten_path: /api%d\nupstream: http://127.0.0.1:%s\nendpoints:\n' "$i" "$i" "$UP"
      for ((j = 1; j <= 10; j++)); do
        printf '  - path: "/e%d/{id}"\n    plugin: { path: %s, function: noop }\n' "$j" "$PLUGIN"
      done
    } >"$WORK/gw/apis/api$i.yaml"
  done
}
# Starts the gateway (not in a subshell: PIDS must hold it); sets
# STARTUP_MS to the milliseconds until it answered.
timed_start() { # workers
  local t0; t0=$(now_ms)
  gateway "$1"
  for _ in $(seq 6000); do
    curl -s -o /dev/null "http://127.0.0.1:$GW/s1" && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "scale.sh: the gateway exited:" >&2; cat "$WORK/portcullis.err" >&2; exit 1; }
    sleep 0.01
  done
  STARTUP_MS=$(($(now_ms) - t0))
}
# Reloads through the admin API; prints the milliseconds it took.
timed_reload() {
  local t0 code; t0=$(now_ms)
  code=$(curl -s -o "$WORK/reload.out" -w '%{http_code}' -H 'X-Admin-Secret: scale-bench-secret' -X POST "http://127.0.0.1:$ADMIN/reload")
  [[ $code == 200 ]] || { echo "scale.sh: reload answered $code: $(cat "$WORK/reload.out")" >&2; exit 1; }
  echo $(($(now_ms) - t0))
}

config() {
  say "configuration size: APIs of 10 endpoints each"
  printf '%6s %10s %9s %10s %12s\n' apis start_ms rss_kb reload_ms s1_us_last
  local n
  for n in $APIS; do
    gw_config ""; many_apis "$n"
    timed_start 1
    local started=$STARTUP_MS pg=${PIDS[-1]} reload rss us
    rss=$(rss_kb "$pg")
    reload=$(timed_reload)
    # The last API, on a path none of its endpoints matches: routing among
    # all the APIs and matching its ten endpoints, then the upstream.
    read -r _ us < <(measure "$pg" "http://127.0.0.1:$GW/api$n/other/42")
    printf '%6s %10s %9s %10s %12s\n' "$n" "$started" "$rss" "$reload" "$us"
    stop_last
  done
}

# A copy of the plugin that differs by a custom section (a distinct
# component to compile and cache, the same code).
distinct_plugin() { # index destination
  python3 - "$PLUGIN" "$1" "$2" <<'PY'
import sys
src, index, dest = sys.argv[1], sys.argv[2], sys.argv[3]
def leb(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
name = b"scale-bench"
payload = leb(len(name)) + name + index.encode()
open(dest, "wb").write(open(src, "rb").read() + b"\x00" + leb(len(payload)) + payload)
PY
}

plugins() {
  say "plugins: distinct components, cold and warm compile cache"
  printf '%8s %10s %14s %14s %12s %16s\n' plugins pool_size cold_start_ms warm_start_ms rss_kb kb_per_plugin
  local base=""
  local n pool
  for n in $PLUGINS; do
    for pool in 4 64; do
      gw_config "plugin_limits: { pool_size: $pool }"
      local i
      for ((i = 1; i <= n; i++)); do
        distinct_plugin "$i" "$WORK/gw/p$i.wasm"
        printf 'id: p%d\nlisten_path: /p%d\nupstream: http://127.0.0.1:%s\nendpoints:\n  - path: /\n    plugin: { path: %s, function: virtual }\n' \
          "$i" "$i" "$UP" "$WORK/gw/p$i.wasm" >"$WORK/gw/apis/p$i.yaml"
      done
      local cold warm rss
      timed_start 1; cold=$STARTUP_MS; stop_last
      timed_start 1; warm=$STARTUP_MS
      # Every plugin called once: its instance pool in use.
      for ((i = 1; i <= n; i++)); do curl -s -o /dev/null -H 'X-User: alice' "http://127.0.0.1:$GW/p$i"; done
      rss=$(rss_kb "${PIDS[-1]}")
      stop_last
      [[ -n $base ]] || base=$rss
      printf '%8s %10s %14s %14s %12s %16s\n' "$n" "$pool" "$cold" "$warm" "$rss" \
        "$(awk -v r="$rss" -v b="$base" -v n="$n" 'BEGIN { printf (n > 1 ? "%.0f" : "-"), (r - b) / (n - 1) }')"
    done
  done
}

bodies() {
  say "bodies: 1 GiB up and down"
  nginx_proxy 1
  gw_config "max_request_body_bytes: 2147483648"
  cat >"$WORK/gw/apis/read.yaml" <<YAML
id: read
listen_path: /read
upstream: http://127.0.0.1:$UP
max_request_body_bytes: 1048576
endpoints:
  - path: /
    plugin: { path: $PLUGIN, function: read-body }
YAML
  timed_start 1
  local gw_pg=${PIDS[-1]} nginx_worker; nginx_worker=$(worker_of "${PIDS[-2]}")
  printf '%-11s %-22s %8s %12s %10s %12s\n' server transfer status bytes seconds peak_rss_kb
  local server port pid out
  # status, bytes sent or received, seconds (curl fails when a server
  # refuses mid-upload: the row says so).
  upload() { head -c 1073741824 /dev/zero | taskset -c "$WRK_CPU" curl -s -o /dev/null \
    -w '%{http_code} %{size_upload} %{time_total}' -T - -H 'Transfer-Encoding: chunked' "$1" || true; }
  for server in nginx portcullis; do
    if [[ $server == nginx ]]; then port=$NGINX pid=$nginx_worker; else port=$GW pid=$gw_pg; fi
    out=$(upload "http://127.0.0.1:$port/s1/up")
    printf '%-11s %-22s %8s %12s %10s %12s\n' "$server" "1 GiB upload" $out "$(hwm_kb "$pid")"
    out=$(taskset -c "$WRK_CPU" curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}' \
      "http://127.0.0.1:$port/s1/big" || true)
    printf '%-11s %-22s %8s %12s %10s %12s\n' "$server" "1 GiB download" $out "$(hwm_kb "$pid")"
  done
  out=$(upload "http://127.0.0.1:$GW/read")
  printf '%-11s %-22s %8s %12s %10s %12s\n' portcullis "1 GiB into a plugin" $out "$(hwm_kb "$gw_pg")"
  stop_last; stop_last
}

overload() {
  say "overload: S3 open loop at 1.5x capacity, then at 0.5x"
  command -v h2load >/dev/null || { echo "scale.sh: h2load is missing (apt-get install nghttp2-client)" >&2; exit 1; }
  gw_config ""; gateway 1; wait_for "http://127.0.0.1:$GW/s1"
  # Each connection sends at its own fixed rate and has one request out at
  # a time: with OVERLOAD_CONNS of them, an overloaded server queues up to
  # that many, and what the generator could not send on time is `late`.
  # Capacity is measured closed-loop on as many connections.
  local pg=${PIDS[-1]} capacity conns=${OVERLOAD_CONNS:-256}
  read -r capacity _ < <(CONNS=$conns measure "$pg" "http://127.0.0.1:$GW/s3" -H 'X-User: alice')
  printf 'capacity (closed loop, %s connections): %s req/s\n' "$conns" "$capacity"
  printf '%-6s %10s %10s %8s %8s %8s %8s %8s %8s\n' load target_rps done_rps ok errors late p50_ms p99_ms max_ms
  local factor
  for factor in 1.5 0.5 1.5 0.5; do
    local rate per_client
    rate=$(awk -v c="$capacity" -v f="$factor" 'BEGIN { printf "%d", c * f }')
    per_client=$(awk -v r="$rate" -v n="$conns" 'BEGIN { printf "%d", r / n + 1 }')
    rm -f "$WORK/h2load.log"
    taskset -c "$WRK_CPU" h2load --h1 -c "$conns" --rps "$per_client" -D 10 -H 'X-User: alice' \
      --log-file "$WORK/h2load.log" "http://127.0.0.1:$GW/s3" >"$WORK/h2load.out" 2>&1 || true
    # The log: start time (us), status, duration (us) per request.
    local n ok p50 p99 max
    n=$(wc -l <"$WORK/h2load.log")
    ok=$(awk '$2 >= 200 && $2 < 400' "$WORK/h2load.log" | wc -l)
    read -r p50 p99 max < <(awk '{ print $3 }' "$WORK/h2load.log" | sort -n | awk -v n="$n" '
      NR == int(n * 0.5) + 1 { p50 = $1 } NR == int(n * 0.99) + 1 { p99 = $1 } { max = $1 }
      END { printf "%.2f %.2f %.2f\n", p50 / 1000, p99 / 1000, max / 1000 }')
    printf '%-6s %10d %10.0f %8d %8d %8d %8s %8s %8s\n' "${factor}x" "$rate" "$(awk -v n="$n" 'BEGIN { print n / 10 }')" \
      "$ok" "$((n - ok))" "$((rate * 10 > n ? rate * 10 - n : 0))" "$p50" "$p99" "$max"
  done
  stop_last
}

for section in $SECTIONS; do
  case $section in
    cores | connections | config | plugins | bodies | overload) "$section" ;;
    *) echo "scale.sh: unknown section $section" >&2; exit 2 ;;
  esac
done
