#!/usr/bin/env bash
# balance.sh GATEWAY_BIN: scenario S1 (plain reverse proxy) to one upstream
# server and to two behind one upstream, Portcullis (least_request) beside
# nginx (least_conn, the same two servers), same run.
#
# The question is what balancing costs per request: Portcullis's two-target
# row against its one-target row, and both against nginx's. Everything runs
# on 127.0.0.1:18094-18097, one worker per proxy pinned with the upstreams
# (one nginx, {"ok":true}) to SERVER_CPU, wrk on WRK_CPU. REPEAT rounds run
# round-robin; the table shows medians of requests/s and the proxy's CPU per
# request (user+sys of its processes).
set -euo pipefail

GATEWAY_BIN=${1:?usage: balance.sh GATEWAY_BIN}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
REPEAT=${REPEAT:-3}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
UP_A=18094 UP_B=18095 NGINX=18096 GW=18097
WORK=$(mktemp -d /tmp/portcullis-balance-bench.XXXXXX)
PIDS=()

NAME=balance.sh
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

preflight $UP_A $UP_B $NGINX $GW

ok="location / { default_type application/json; return 200 '{\"ok\":true}'; }"
nginx_conf upstream "server { listen 127.0.0.1:$UP_A; $ok } server { listen 127.0.0.1:$UP_B; $ok }"
nginx_conf proxy "
  upstream one { server 127.0.0.1:$UP_A; keepalive 64; }
  upstream two { least_conn; server 127.0.0.1:$UP_A; server 127.0.0.1:$UP_B; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX;
    proxy_http_version 1.1; proxy_set_header Connection \"\";
    location /one { proxy_pass http://one; }
    location /two { proxy_pass http://two; }
  }"

mkdir -p "$WORK/gateway/apis"
cat >"$WORK/gateway/gateway.yaml" <<YAML
listen: 127.0.0.1:$GW
apis: [apis/]
plugin_cache: false
session_store: $WORK/gateway/sessions.redb
YAML
printf 'id: one\nlisten_path: /one\nupstream: http://127.0.0.1:%s\n' "$UP_A" >"$WORK/gateway/apis/one.yaml"
cat >"$WORK/gateway/apis/two.yaml" <<YAML
id: two
listen_path: /two
upstream:
  targets: [http://127.0.0.1:$UP_A, http://127.0.0.1:$UP_B]
  balance: least_request
YAML

start upstream nginx -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log"
start nginx nginx -c "$WORK/proxy/nginx.conf" -e "$WORK/proxy/error.log"
NGINX_PGID=${PIDS[-1]}
start portcullis env -u RUST_BACKTRACE PORTCULLIS_LOG=warn "$GATEWAY_BIN" serve --config "$WORK/gateway/gateway.yaml" --workers 1
GW_PGID=${PIDS[-1]}

for path in one two; do
  for port in $NGINX $GW; do
    wait_for "http://127.0.0.1:$port/$path"
    body=$(curl -s "http://127.0.0.1:$port/$path")
    [[ $body == '{"ok":true}' ]] || { echo "balance.sh: :$port/$path answered $body" >&2; exit 1; }
  done
done

declare -A RESULTS
for round in $(seq "$REPEAT"); do
  for path in one two; do
    RESULTS[nginx,$path]+="$(measure "$NGINX_PGID" "http://127.0.0.1:$NGINX/$path")"$'\n'
    RESULTS[portcullis,$path]+="$(measure "$GW_PGID" "http://127.0.0.1:$GW/$path")"$'\n'
  done
  echo "round $round of $REPEAT done" >&2
done

printf '\nS1 to one and to two upstream servers, %s connections, %s x %s, medians (wrk on CPU %s, servers on CPU %s)\n' \
  "$CONNS" "$REPEAT" "$DURATION" "$WRK_CPU" "$SERVER_CPU"
printf '%-11s %-8s %10s %12s %9s\n' peer targets req/s "cpu_us/req" "srv_cpu%"
for peer in nginx portcullis; do
  for path in one two; do
    rows=${RESULTS[$peer,$path]}
    rps=$(awk '{print $1}' <<<"$rows" | grep . | median)
    us=$(awk '{print $2}' <<<"$rows" | grep . | median)
    printf '%-11s %-8s %10s %12s %9.0f\n' "$peer" "$path" "$rps" "$us" "$(awk -v r="$rps" -v u="$us" 'BEGIN { print r * u / 1e4 }')"
  done
done
