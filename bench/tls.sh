#!/usr/bin/env bash
# tls.sh GATEWAY_BIN CERT_DIR: scenario S1 (plain reverse proxy) with the
# client speaking HTTPS, Portcullis beside nginx, same certificate, same run.
#
#   keep-alive   wrk over CONNS keep-alive TLS connections: requests/s and
#                the proxy's CPU per request (user+sys of its processes).
#   handshake    the same with `Connection: close`: every request is a new
#                TCP connection and a full TLS handshake (wrk never resumes
#                a session), so requests/s = new handshakes/s.
#
# Both proxies: one worker, pinned with the upstream (nginx, plain HTTP,
# {"ok":true}) to SERVER_CPU; wrk on WRK_CPU. Both use CERT_DIR/server.pem
# and server.key (ECDSA P-256, made by `cargo xtask bench`), TLS 1.2-1.3,
# their default cipher preference and session tickets. nginx keeps
# client connections open for as many requests as Portcullis does
# (keepalive_requests), so neither pays handshakes the other does not.
# REPEAT rounds run round-robin; the table shows medians. srv_cpu% is the
# proxy's share of its core: well under 100 means wrk, not the proxy, set
# the pace (likely for handshakes, where the client works about as hard as
# the server), and cpu_us/req is then the number to compare. Everything runs on
# 127.0.0.1:18090-18093 and is stopped on exit.
set -euo pipefail

GATEWAY_BIN=${1:?usage: tls.sh GATEWAY_BIN CERT_DIR}
CERTS=$(cd "${2:?usage: tls.sh GATEWAY_BIN CERT_DIR}" && pwd)
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
REPEAT=${REPEAT:-3}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
UP=18090 NGINX=18091 GW_TLS=18092 GW_PLAIN=18093
WORK=$(mktemp -d /tmp/portcullis-tls-bench.XXXXXX)
PIDS=()

NAME=tls.sh
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

preflight $UP $NGINX $GW_TLS $GW_PLAIN

# The upstream and the nginx proxy: two nginx instances, one worker each.
nginx_conf upstream "server { listen 127.0.0.1:$UP; location / { default_type application/json; return 200 '{\"ok\":true}'; } }"
nginx_conf proxy "
  upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX ssl;
    ssl_certificate $CERTS/server.pem;
    ssl_certificate_key $CERTS/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"

mkdir -p "$WORK/gateway/apis"
cat >"$WORK/gateway/gateway.yaml" <<EOF
listen: 127.0.0.1:$GW_PLAIN
tls:
  listen: 127.0.0.1:$GW_TLS
  certificates: [{ cert: $CERTS/server.pem, key: $CERTS/server.key }]
apis: [apis/]
plugin_cache: false
session_store: $WORK/gateway/sessions.redb
EOF
printf 'id: s1\nlisten_path: /s1\nupstream: http://127.0.0.1:%s\n' "$UP" >"$WORK/gateway/apis/s1.yaml"

start upstream nginx -c "$WORK/upstream/nginx.conf" -e "$WORK/upstream/error.log"
start nginx nginx -c "$WORK/proxy/nginx.conf" -e "$WORK/proxy/error.log"
NGINX_PGID=${PIDS[-1]}
start portcullis env -u RUST_BACKTRACE PORTCULLIS_LOG=warn "$GATEWAY_BIN" serve --config "$WORK/gateway/gateway.yaml" --workers 1
GW_PGID=${PIDS[-1]}

wait_for "https://127.0.0.1:$NGINX/s1"
wait_for "https://127.0.0.1:$GW_TLS/s1"
for url in "https://127.0.0.1:$NGINX/s1" "https://127.0.0.1:$GW_TLS/s1"; do
  body=$(curl -sk "$url")
  [[ $body == '{"ok":true}' ]] || { echo "tls.sh: $url answered $body" >&2; exit 1; }
done

declare -A RESULTS
for round in $(seq "$REPEAT"); do
  for peer in nginx portcullis; do
    if [[ $peer == nginx ]]; then pgid=$NGINX_PGID port=$NGINX; else pgid=$GW_PGID port=$GW_TLS; fi
    RESULTS[$peer,keepalive]+="$(measure "$pgid" "https://127.0.0.1:$port/s1")"$'\n'
    RESULTS[$peer,handshake]+="$(measure "$pgid" "https://127.0.0.1:$port/s1" -H 'Connection: close')"$'\n'
  done
  echo "round $round of $REPEAT done" >&2
done

printf '\nS1 over HTTPS, %s connections, %s x %s, medians (wrk on CPU %s, servers on CPU %s)\n' \
  "$CONNS" "$REPEAT" "$DURATION" "$WRK_CPU" "$SERVER_CPU"
printf '%-11s %-10s %10s %12s %9s\n' peer scenario req/s "cpu_us/req" "srv_cpu%"
for scenario in keepalive handshake; do
  for peer in nginx portcullis; do
    rows=${RESULTS[$peer,$scenario]}
    rps=$(awk '{print $1}' <<<"$rows" | grep . | median)
    us=$(awk '{print $2}' <<<"$rows" | grep . | median)
    printf '%-11s %-10s %10s %12s %9.0f\n' "$peer" "$scenario" "$rps" "$us" "$(awk -v r="$rps" -v u="$us" 'BEGIN { print r * u / 1e4 }')"
  done
done
