#!/usr/bin/env bash
# Instructions per request, counted by callgrind: repeatable whatever else
# the machine does. Runs BINARY (a `portcullis` build) under valgrind twice,
# serving N1 and N2 keep-alive requests from one curl, and prints
# (total(N2) - total(N1)) / (N2 - N1), so start-up and shutdown cancel out.
#
# SCENARIO is s1 (plain proxy, the default), f1 (S1 through the bench
# plugin's noop, which continues unchanged), p1 (S1 with the built-in
# policies a Tyk API typically has: a client IP allow list, CORS with the
# browser's Origin, request and response header transforms and a path
# rewrite), j1 and j2 (S1 behind JWT auth, HS256 and RS256, with the
# token in the request), or s3 (a virtual endpoint
# answered by a fresh instance of the bench plugin: PLUGIN=path/to/bench.wasm,
# default the example-plugins build). TARGET is the request path (default
# /s1/items/42 or /s3; try a spelling such as /s1/x/../items/%34%32 to count
# the canonicalisation's slow path).
#
# BINARY may also be nginx (S1 through nginx with one worker and upstream
# keep-alive, the peer benchmark's configuration: the baseline counted the
# same way) or the bare_proxy example (hyper and the upstream client alone:
# the floor of the HTTP stack).
#
#   bench/callgrind.sh target/release/portcullis [s1|s3] [N1 N2]
#   bench/callgrind.sh "$(command -v nginx)" s1
#   bench/callgrind.sh target/release/examples/bare_proxy s1
set -euo pipefail
binary=$(realpath "$1")
scenario=${2:-s1}
n1=${3:-200}
n2=${4:-2200}
here=$(dirname "$(realpath "$0")")
plugin=$(realpath "${PLUGIN:-$here/../example-plugins/target/wasm32-wasip2/release/bench.wasm}")
case $scenario in
  s1) target=${TARGET:-/s1/items/42} ;;
  f1) target=${TARGET:-/f1/items/42} ;;
  p1) target=${TARGET:-/p1/items/42} ;;
  j1|j2) target=${TARGET:-/$scenario/items/42} ;;
  s3) target=${TARGET:-/s3} ;;
  *) echo "unknown scenario $scenario (s1, f1, p1, j1, j2 or s3)" >&2; exit 2 ;;
esac
# What the client sends besides the request line (p1: a browser's
# Origin; j1/j2: a bearer token signed with the test keys).
headers=()
work=$(mktemp -d)
# KEEP=DIR keeps the callgrind outputs there, for callgrind_annotate.
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] && cp "$work"/cg.* "$KEEP"/; rm -rf "$work"' EXIT

mkdir -p "$work/www/items" "$work/apis"
mkdir -p "$work/www/s1/items"
printf 'hello\n' > "$work/www/items/42"
# bare_proxy forwards the path as it came.
cp "$work/www/items/42" "$work/www/s1/items/42"
# A keep-alive upstream (http.server's default speaks HTTP/1.0: a new
# connection per request would be counted too).
python3 - "$work/www" > "$work/upstream.log" 2>&1 <<'PY' &
import functools, http.server, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
handler.func.protocol_version = "HTTP/1.1"
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
print(f"port {server.server_address[1]}", flush=True)
server.serve_forever()
PY
for _ in $(seq 100); do
  port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$work/upstream.log" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
cat > "$work/gateway.yaml" <<EOF
listen: 127.0.0.1:0
apis: [apis/]
plugin_cache: false
session_store: $work/sessions.redb
# Under valgrind the pooling allocator cannot reserve its usual address
# space; one request at a time needs few slots.
plugin_limits: { pool_size: 2 }
EOF
# Only the scenario's API: S1 then loads no plugin at all.
if [ "$scenario" = s1 ]; then
  printf 'id: s1\nlisten_path: /s1/\nstrip_listen_path: true\nupstream: http://127.0.0.1:%s\n' "$port" > "$work/apis/s1.yaml"
elif [ "$scenario" = p1 ]; then
  cat > "$work/apis/p1.yaml" <<EOF
id: p1
listen_path: /p1/
strip_listen_path: true
upstream: http://127.0.0.1:$port
client_ips: { allow: [127.0.0.0/8, "::1"], deny: [10.0.0.0/8] }
cors: { origins: [https://app.example.com], credentials: true }
headers:
  request: { set: { x-request: "{request_id}" }, remove: [x-internal] }
  response: { set: { x-served-by: "{api_id}" } }
endpoints:
  - path: /items/{id}
    rewrite: /items/{id}
EOF
  headers=(-H "Origin: https://app.example.com")
elif [ "$scenario" = j1 ] || [ "$scenario" = j2 ]; then
  fixtures=$(realpath "$here/../tests/fixtures/jwt")
  if [ "$scenario" = j1 ]; then
    auth="{ type: jwt, algorithms: [HS256], secret: an HMAC secret of more than 32 bytes for benches }"
    token=$(python3 - <<'PY'
import base64, hashlib, hmac, json, time
b = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=")
msg = b({"alg": "HS256", "typ": "JWT"}) + b"." + b({"sub": "bench", "exp": int(time.time()) + 3600})
sig = hmac.new(b"an HMAC secret of more than 32 bytes for benches", msg, hashlib.sha256).digest()
print((msg + b"." + base64.urlsafe_b64encode(sig).rstrip(b"=")).decode())
PY
)
  else
    auth="{ type: jwt, algorithms: [RS256], public_key_files: [$fixtures/rsa1.pub] }"
    token=$(python3 - "$fixtures/rsa1.key" <<'PY'
import base64, json, subprocess, sys, time
b = lambda d: base64.urlsafe_b64encode(json.dumps(d, separators=(",", ":")).encode()).rstrip(b"=")
msg = b({"alg": "RS256", "typ": "JWT"}) + b"." + b({"sub": "bench", "exp": int(time.time()) + 3600})
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", sys.argv[1]], input=msg, capture_output=True, check=True).stdout
print((msg + b"." + base64.urlsafe_b64encode(sig).rstrip(b"=")).decode())
PY
)
  fi
  printf 'id: %s\nlisten_path: /%s/\nstrip_listen_path: true\nupstream: http://127.0.0.1:%s\nauth: %s\n' "$scenario" "$scenario" "$port" "$auth" > "$work/apis/$scenario.yaml"
  headers=(-H "Authorization: Bearer $token")
elif [ "$scenario" = f1 ]; then
  printf 'id: f1\nlisten_path: /f1/\nstrip_listen_path: true\nupstream: http://127.0.0.1:%s\nendpoints:\n  - path: /{*rest}\n    plugin: { path: %s, function: noop }\n' "$port" "$plugin" > "$work/apis/f1.yaml"
else
  printf 'id: s3\nlisten_path: /s3\nupstream: http://127.0.0.1:%s\nendpoints:\n  - path: /\n    plugin: { path: %s, function: virtual }\n' "$port" "$plugin" > "$work/apis/s3.yaml"
fi

# nginx and bare_proxy listen on a port chosen here.
free_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$port; keepalive 16; }
    server {
        listen 127.0.0.1:$free_port;
        location /s1/ { proxy_pass http://up/; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF

count() {
  local n=$1 out="$work/cg.$1"
  local command=("$binary" serve --workers 1 --config "$work/gateway.yaml")
  case $(basename "$binary") in
    nginx) command=("$binary" -p "$work/nginx/" -c "$work/nginx/nginx.conf") ;;
    bare_proxy*) command=("$binary" "127.0.0.1:$free_port" "http://127.0.0.1:$port") ;;
  esac
  env -u RUST_BACKTRACE PORTCULLIS_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$out" "${command[@]}" \
    > "$work/stdout.$n" 2> "$work/stderr.$n" &
  local pid=$!
  local url=""
  for _ in $(seq 600); do
    case $(basename "$binary") in
      nginx|bare_proxy*) curl -s -o /dev/null "http://127.0.0.1:$free_port/" && url=http://127.0.0.1:$free_port ;;
      *) url=$(sed -n 's/^listening on //p' "$work/stdout.$n") ;;
    esac
    [ -n "$url" ] && break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    cat "$work/stderr.$n" >&2
    exit 1
  fi
  # One connection, N requests; the bodies are not ours to count.
  curl -s --path-as-is "${headers[@]}" $(for _ in $(seq "$n"); do printf '%s%s ' "$url" "$target"; done) > /dev/null
  kill -TERM "$pid"
  wait "$pid" || true
  callgrind_annotate "$out" 2>/dev/null | sed -n 's/^\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
}

a=$(count "$n1")
b=$(count "$n2")
echo "instructions per request: $(( (b - a) / (n2 - n1) )) ($target, $n1 and $n2 requests)"
